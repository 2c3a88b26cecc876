package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// pingResend is how long Ping waits for a reply before it sends the echo
// again: a first echo can be lost to a handshake in progress.
const pingResend = 250 * time.Millisecond

// Ping sends an ICMP echo request to a mesh address through the tunnel and
// returns the round trip of the first echo answered. It resends the echo
// every 250ms until a reply comes or ctx ends, so that the first packet
// triggering a handshake does not make a live peer look dead.
func (t *Tunnel) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	t.state.Lock()
	closed := t.state.closed
	t.state.Unlock()
	if closed {
		return 0, errClosed(fmt.Sprintf("ping %s", addr))
	}
	addr = addr.Unmap()
	var src netip.Addr
	for _, a := range t.addrs {
		if a.Is4() == addr.Is4() {
			src = a
			break
		}
	}
	if !src.IsValid() {
		return 0, fmt.Errorf("netstack: ping %s: this node has no mesh address of that family", addr)
	}
	pc, err := t.dialPing(src, addr)
	if err != nil {
		return 0, fmt.Errorf("netstack: ping %s: %w", addr, err)
	}
	defer pc.Close()
	// Wake a Read blocked past its resend deadline as soon as ctx ends.
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()

	echoType := byte(8) // ICMPv4 echo request
	if addr.Is6() {
		echoType = 128
	}
	var payload [16]byte
	rand.Read(payload[:])
	sent := map[uint16]time.Time{}
	reply := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if _, err := pc.Write(echoRequest(echoType, seq, payload[:])); err != nil {
			return 0, fmt.Errorf("netstack: ping %s: send echo: %w", addr, err)
		}
		sent[seq] = time.Now()
		deadline := time.Now().Add(pingResend)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		pc.SetReadDeadline(deadline)
		// Checked after setting the deadline: a ctx that ended before is
		// seen here, one that ends after resets the deadline to now.
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("netstack: ping %s: %w", addr, err)
		}
		for {
			n, err := pc.Read(reply)
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				if err := ctx.Err(); err != nil {
					return 0, fmt.Errorf("netstack: ping %s: no reply: %w", addr, err)
				}
				break // resend
			}
			if err != nil {
				return 0, fmt.Errorf("netstack: ping %s: read reply: %w", addr, err)
			}
			if s, ok := echoReply(reply[:n], echoType, payload[:]); ok {
				if at, ok := sent[s]; ok {
					return time.Since(at), nil
				}
			}
		}
	}
}

// dialPing opens a gVisor ICMP ("ping") socket from src to dst. gonet's
// datagram conn serves it: its Read waits on the endpoint's queue with a
// deadline, and Write sends to the connected address.
func (t *Tunnel) dialPing(src, dst netip.Addr) (*gonet.UDPConn, error) {
	tp, np := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if dst.Is6() {
		tp, np = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := t.stack.NewEndpoint(tp, np, &wq)
	if terr != nil {
		return nil, fmt.Errorf("ping socket: %s", terr)
	}
	sa, _ := fullAddr(netip.AddrPortFrom(src, 0))
	if terr := ep.Bind(sa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("ping socket: bind %s: %s", src, terr)
	}
	da, _ := fullAddr(netip.AddrPortFrom(dst, 0))
	if terr := ep.Connect(da); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("ping socket: connect %s: %s", dst, terr)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// echoRequest builds an ICMP echo request. The identifier and checksum are
// left zero: gVisor's ping socket sets both.
func echoRequest(typ byte, seq uint16, payload []byte) []byte {
	m := make([]byte, 8+len(payload))
	m[0] = typ
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	return m
}

// echoReply reports whether m is the reply to one of our echo requests of
// type reqType carrying payload, and its sequence number.
func echoReply(m []byte, reqType byte, payload []byte) (uint16, bool) {
	want := byte(0) // ICMPv4 echo reply
	if reqType == 128 {
		want = 129
	}
	if len(m) < 8 || m[0] != want || m[1] != 0 || !bytes.Equal(m[8:], payload) {
		return 0, false
	}
	return binary.BigEndian.Uint16(m[6:]), true
}
