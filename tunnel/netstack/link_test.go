package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoSegment builds what gVisor's TCP hands a host-GSO link: one IP packet
// with a TCP header carrying a partial checksum and payload bytes of data.
func gsoSegment(t *testing.T, v6 bool, payload []byte, mss uint16, flags header.TCPFlags) *stack.PacketBuffer {
	t.Helper()
	opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv6MinimumSize + header.TCPMinimumSize + len(opts),
		Payload:            buffer.MakeWithData(payload),
	})
	tcpLen := header.TCPMinimumSize + len(opts)
	tcp := header.TCP(pkt.TransportHeader().Push(tcpLen))
	tcp.Encode(&header.TCPFields{
		SrcPort: 40000, DstPort: 5201, SeqNum: 1000, AckNum: 7,
		DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 512,
	})
	copy(tcp[header.TCPMinimumSize:], opts)
	src4, dst4 := tcpip.AddrFrom4([4]byte{100, 64, 0, 1}), tcpip.AddrFrom4([4]byte{100, 64, 0, 2})
	src6 := tcpip.AddrFrom16([16]byte{0xfd, 0x7a, 15: 1})
	dst6 := tcpip.AddrFrom16([16]byte{0xfd, 0x7a, 15: 2})
	total := tcpLen + len(payload)
	gso := stack.GSO{NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: mss, MaxSize: gsoMaxSize}
	if v6 {
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{
			PayloadLength: uint16(total), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: src6, DstAddr: dst6,
		})
		tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src6, dst6, uint16(total)))
		gso.Type, gso.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + total), ID: 77, Flags: header.IPv4FlagDontFragment,
			TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src4, DstAddr: dst4,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src4, dst4, uint16(total)))
		gso.Type, gso.L3HdrLen = stack.GSOTCPv4, header.IPv4MinimumSize
	}
	pkt.GSOOptions = gso
	t.Cleanup(pkt.DecRef)
	return pkt
}

// TestCopyOutCutsAGSOSegmentIntoValidPackets checks what a peer's kernel
// would check of every packet Read hands wireguard-go: IP and TCP
// checksums, lengths, contiguous sequence numbers, PSH and FIN only on the
// last packet, and the payload intact in order.
func TestCopyOutCutsAGSOSegmentIntoValidPackets(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := make([]byte, 60000)
		rand.Read(payload)
		const mss = 1340
		pkt := gsoSegment(t, v6, payload, mss, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin)
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 16+1<<16)
		}
		sizes := make([]int, len(bufs))
		n, ok := copyOut(pkt, bufs, sizes, 16, 1420)
		if !ok {
			t.Fatalf("v6=%v: copyOut found no room in %d buffers", v6, len(bufs))
		}
		hdrLen := header.IPv4MinimumSize + 32
		if v6 {
			hdrLen = header.IPv6MinimumSize + 32
		}
		seg := segmentPayload(hdrLen, mss, 1420)
		if want := (len(payload) + seg - 1) / seg; n != want {
			t.Fatalf("v6=%v: %d packets, want %d of at most %d payload bytes", v6, n, want, seg)
		}
		var got []byte
		seq := uint32(1000)
		for i := range n {
			p := bufs[i][16 : 16+sizes[i]]
			var tcp header.TCP
			var src, dst tcpip.Address
			if v6 {
				ip := header.IPv6(p)
				if int(ip.PayloadLength()) != len(p)-header.IPv6MinimumSize {
					t.Fatalf("v6 packet %d: payload length %d of %d bytes", i, ip.PayloadLength(), len(p))
				}
				tcp, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
			} else {
				ip := header.IPv4(p)
				if !ip.IsValid(len(p)) || !ip.IsChecksumValid() {
					t.Fatalf("v4 packet %d: invalid IP header (length %d, checksum %#x)", i, ip.TotalLength(), ip.Checksum())
				}
				if ip.ID() != 77+uint16(i) {
					t.Errorf("v4 packet %d: IP ID %d, want %d", i, ip.ID(), 77+i)
				}
				tcp, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
			}
			data := tcp.Payload()
			if len(data) > mss {
				t.Fatalf("v6=%v packet %d: %d payload bytes, more than the MSS %d", v6, i, len(data), mss)
			}
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
			if checksum.Checksum(tcp, xsum) != 0xffff {
				t.Fatalf("v6=%v packet %d: bad TCP checksum", v6, i)
			}
			if tcp.SequenceNumber() != seq {
				t.Fatalf("v6=%v packet %d: seq %d, want %d", v6, i, tcp.SequenceNumber(), seq)
			}
			last := i == n-1
			if f := tcp.Flags(); f.Contains(header.TCPFlagPsh) != last || f.Contains(header.TCPFlagFin) != last || !f.Contains(header.TCPFlagAck) {
				t.Errorf("v6=%v packet %d of %d: flags %v", v6, i, n, f)
			}
			seq += uint32(len(data))
			got = append(got, data...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("v6=%v: reassembled payload differs from the segment's", v6)
		}
		// With too few buffers nothing is copied, so Read can keep it.
		if _, ok := copyOut(pkt, bufs[:n-1], sizes, 16, 1420); ok {
			t.Errorf("v6=%v: copyOut into %d buffers for %d packets reports success", v6, n-1, n)
		}
	}
}

// TestSegmentSizeKeepsWireGuardDatagramsUnder64KiBSends pins the choice
// segmentPayload makes for MTU 1420 and its rule in general.
func TestSegmentSizeKeepsWireGuardDatagramsUnder64KiBSends(t *testing.T) {
	// gVisor's MSS at MTU 1420 with timestamps and SACK: 1,392-byte
	// packets, which wireguard-go seals into 1,424-byte datagrams.
	if got := segmentPayload(52, 1340, 1420); got != 1324 {
		t.Errorf("segmentPayload(52, 1340, 1420) = %d, want 1324 (1,408-byte datagrams)", got)
	}
	// Linux's segments at MTU 1420 fill the MTU: 1,452-byte datagrams,
	// 45 to a send, are fine.
	if got := segmentPayload(52, 1368, 1420); got != 1368 {
		t.Errorf("segmentPayload(52, 1368, 1420) = %d, want the MSS itself", got)
	}
	for mss := 500; mss <= 9000; mss++ {
		p := segmentPayload(52, mss, 9000)
		if p > mss || p < mss-4*wgPadding {
			t.Fatalf("segmentPayload(52, %d, 9000) = %d, outside [mss-64, mss]", mss, p)
		}
	}
}

// TestLargeTransfersArriveIntactBothWaysOverIPv4AndIPv6 moves megabytes
// through two tunnels in each direction, and to a tunnel's own address,
// and compares digests: segmentation and receive coalescing must
// neither lose, reorder nor corrupt a byte.
func TestLargeTransfersArriveIntactBothWaysOverIPv4AndIPv6(t *testing.T) {
	checkGoroutineLeaks(t)
	a, b := newNode(t, 1), newNode(t, 2)
	connectPair(t, a, b)
	const size = 8 << 20
	for _, tc := range []struct {
		name     string
		from, to *node
		dst      netip.Addr
	}{
		{"a to b over IPv4", a, b, b.v4},
		{"b to a over IPv6", b, a, a.v6},
		{"a to itself", a, a, a.v4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.to.ListenTCP(0)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			port := uint16(l.Addr().(*net.TCPAddr).Port)
			want := make([]byte, size)
			rand.Read(want)
			type result struct {
				sum [32]byte
				n   int64
				err error
			}
			got := make(chan result, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					got <- result{err: err}
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				h := sha256.New()
				n, err := io.Copy(h, c)
				var r result
				copy(r.sum[:], h.Sum(nil))
				r.n, r.err = n, err
				got <- r
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := tc.from.DialContext(ctx, "tcp", netip.AddrPortFrom(tc.dst, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(want); err != nil {
				t.Fatal(err)
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			r := <-got
			if r.err != nil || r.n != size || r.sum != sha256.Sum256(want) {
				t.Fatalf("received %d bytes (err %v), digest match %v; want %d intact bytes", r.n, r.err, r.sum == sha256.Sum256(want), size)
			}
		})
	}
}
