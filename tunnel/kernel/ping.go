package kernel

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingResend is how long Ping waits for a reply before it sends the echo
// again: a first echo can be lost to a handshake in progress.
const pingResend = 250 * time.Millisecond

// Ping sends an ICMP echo request from this node's mesh address to a mesh
// address and returns the round trip of the first echo answered. It
// resends the echo every 250ms until a reply comes or ctx ends, so that the
// first packet triggering a handshake does not make a live peer look dead.
// It uses a raw ICMP socket, which kernel TUN mode's root privilege allows.
func (t *Tunnel) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	if t.isClosed() {
		return 0, errClosed(fmt.Sprintf("ping %s", addr))
	}
	addr = addr.Unmap()
	src, ok := t.sourceFor(addr)
	if !ok {
		return 0, fmt.Errorf("kernel: ping %s: this node has no mesh address of that family", addr)
	}
	network, proto := "ip4:icmp", 1
	var echo, echoReply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		echo, echoReply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	pc, err := icmp.ListenPacket(network, src.String())
	if err != nil {
		return 0, fmt.Errorf("kernel: ping %s: %w", addr, err)
	}
	defer pc.Close()
	// Wake a Read blocked past its resend deadline as soon as ctx ends.
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()

	// A raw socket sees every echo reply to this host: the identifier and
	// payload pick out ours.
	id := int(rand.N[uint16](1<<16 - 1))
	payload := make([]byte, 16)
	crand.Read(payload)
	dst := &net.IPAddr{IP: addr.AsSlice()}
	sent := map[int]time.Time{}
	reply := make([]byte, 1500)
	for seq := 1; seq <= 1<<16-1; seq++ {
		m := icmp.Message{Type: echo, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		b, err := m.Marshal(nil) // the kernel fills the ICMPv6 checksum
		if err != nil {
			return 0, fmt.Errorf("kernel: ping %s: %w", addr, err)
		}
		if _, err := pc.WriteTo(b, dst); err != nil {
			return 0, fmt.Errorf("kernel: ping %s: send echo: %w", addr, err)
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
			return 0, fmt.Errorf("kernel: ping %s: %w", addr, err)
		}
		for {
			n, from, err := pc.ReadFrom(reply)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if err := ctx.Err(); err != nil {
					return 0, fmt.Errorf("kernel: ping %s: no reply: %w", addr, err)
				}
				break // resend
			}
			if err != nil {
				return 0, fmt.Errorf("kernel: ping %s: read reply: %w", addr, err)
			}
			if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.IP) {
				continue
			}
			rm, err := icmp.ParseMessage(proto, reply[:n])
			if err != nil || rm.Type != echoReply {
				continue
			}
			e, ok := rm.Body.(*icmp.Echo)
			if !ok || e.ID != id || !bytes.Equal(e.Data, payload) {
				continue
			}
			if at, ok := sent[e.Seq]; ok {
				return time.Since(at), nil
			}
		}
	}
	return 0, fmt.Errorf("kernel: ping %s: no reply to %d echoes", addr, 1<<16-1)
}
