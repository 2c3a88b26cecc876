package netstack

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// The link joins wireguard-go and the gVisor stack inside the process. To
// wireguard-go it is the TUN device (linkDevice), to gVisor the NIC's link
// endpoint (linkEndpoint); both are views of one link.
//
// It replaces wireguard-go's tun/netstack device, which hands packets over
// one at a time through an unbuffered channel and reports a batch size of
// 1: every packet then cost a UDP send syscall and a goroutine switch, and
// gVisor's TCP handled every MTU-sized segment on its own. Here:
//
//   - Read hands wireguard-go up to a full batch of packets, so its UDP bind
//     sends them with one sendmmsg (and UDP GSO where the kernel has it);
//   - gVisor's TCP writes 64 KiB segments (host GSO) that Read cuts to the
//     MSS (or a little under it, see segmentPayload), filling in checksums,
//     as a NIC with TSO would;
//   - Write coalesces the TCP segments of one received batch (gVisor's GRO)
//     before the stack sees them.
//
// The link has no goroutine of its own: Read runs on wireguard-go's TUN
// reader, Write on its receivers, WritePackets on gVisor's senders.
type link struct {
	mtu atomic.Uint32

	// out holds what gVisor wrote, for Read. WritePackets blocks while it
	// is full, which holds gVisor's TCP back as a full NIC ring would.
	out       chan *stack.PacketBuffer
	done      chan struct{}
	closeOnce sync.Once
	events    chan tun.Event
	// held is a packet Read took from out and had no room left for in its
	// batch; it comes first in the next Read. Only Read touches it.
	held *stack.PacketBuffer

	attached struct {
		sync.RWMutex
		dispatcher stack.NetworkDispatcher
	}

	gros sync.Pool // of *gro.GRO, one per concurrent Write
}

// outQueueLen bounds the packets (each up to 64 KiB) waiting for Read.
const outQueueLen = 256

// gsoMaxSize is the largest TCP segment gVisor hands the link: the most an
// IP packet can hold.
const gsoMaxSize = 1<<16 - 1

// maxHeaderLen is the room for an IP and a TCP header with options.
const maxHeaderLen = header.IPv6MinimumSize + header.TCPHeaderMaximumSize + 20

func newLink(mtu int) *link {
	l := &link{
		out:    make(chan *stack.PacketBuffer, outQueueLen),
		done:   make(chan struct{}),
		events: make(chan tun.Event, 1),
	}
	l.mtu.Store(uint32(mtu))
	l.gros.New = func() any {
		g := new(gro.GRO)
		g.Init(true)
		return g
	}
	l.events <- tun.EventUp
	return l
}

func (l *link) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// linkDevice is the link as wireguard-go's tun.Device.
type linkDevice struct{ *link }

var _ tun.Device = linkDevice{}

// File returns nil: there is no file behind the device.
func (linkDevice) File() *os.File { return nil }

// Name is a fixed placeholder; wireguard-go only logs it.
func (linkDevice) Name() (string, error) { return "netstack", nil }

// MTU returns the link's MTU.
func (d linkDevice) MTU() (int, error) { return int(d.mtu.Load()), nil }

// Events delivers EventUp once and is closed by Close.
func (d linkDevice) Events() <-chan tun.Event { return d.events }

// BatchSize is wireguard-go's own ideal batch, so that one Read fills what
// its bind sends in one call.
func (linkDevice) BatchSize() int { return conn.IdealBatchSize }

// Read waits for at least one packet from gVisor, then fills bufs with as
// many as are queued, cutting host-GSO TCP segments to their MSS. After
// Close it returns os.ErrClosed.
func (d linkDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.closed() {
		return 0, os.ErrClosed
	}
	pkt := d.held
	d.held = nil
	if pkt == nil {
		select {
		case pkt = <-d.out:
		case <-d.done:
			return 0, os.ErrClosed
		}
	}
	n := 0
	for {
		k, fits := copyOut(pkt, bufs[n:], sizes[n:], offset, int(d.mtu.Load()))
		if !fits {
			if n > 0 {
				d.held = pkt // it fits in an empty batch
				return n, nil
			}
			pkt.DecRef()
			return 0, tun.ErrTooManySegments
		}
		pkt.DecRef()
		n += k
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.out:
		default:
			return n, nil
		}
	}
}

// Write hands packets decrypted by wireguard-go to gVisor, coalescing the
// TCP segments of one flow in the batch first. Checksums are not checked
// again: the packet passed WireGuard's Poly1305 authentication, so it is
// exactly what the peer's stack sent (the Linux WireGuard module marks such
// packets CHECKSUM_UNNECESSARY for the same reason). That is also what lets
// gVisor take a coalesced segment, whose TCP checksum no longer covers it.
func (d linkDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.closed() {
		return 0, os.ErrClosed
	}
	d.attached.RLock()
	disp := d.attached.dispatcher
	d.attached.RUnlock()
	if disp == nil {
		return len(bufs), nil // not attached yet: dropped, as on a NIC that is down
	}
	g := d.gros.Get().(*gro.GRO)
	g.Dispatcher = disp
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue // wireguard-go only passes IP packets; nothing to deliver
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	g.Flush()
	g.Dispatcher = nil
	d.gros.Put(g)
	return len(bufs), nil
}

// Close stops Read and WritePackets and closes Events. The stack is closed
// by its owner.
func (d linkDevice) Close() error {
	d.closeOnce.Do(func() {
		close(d.done)
		close(d.events)
		for {
			select {
			case pkt := <-d.out:
				pkt.DecRef()
			default:
				return
			}
		}
	})
	return nil
}

// linkEndpoint is the link as gVisor's stack.LinkEndpoint.
type linkEndpoint struct{ *link }

var (
	_ stack.LinkEndpoint = linkEndpoint{}
	_ stack.GSOEndpoint  = linkEndpoint{}
)

// WritePackets queues gVisor's outbound packets for Read, waiting while the
// queue is full. After Close it fails with ErrClosedForSend.
func (e linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.closed() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case e.out <- pkt.IncRef():
			n++
		case <-e.done:
			pkt.DecRef()
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

// MTU returns the link's MTU.
func (e linkEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU changes the link's MTU.
func (e linkEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength is 0: packets carry no link-layer header.
func (linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress is empty: the link has no link-layer address.
func (linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress does nothing: the link has no link-layer address.
func (linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities reports RX checksum offload: Write delivers only packets
// WireGuard has authenticated (see linkDevice.Write).
func (linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach sets the dispatcher that Write delivers to.
func (e linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.attached.Lock()
	defer e.attached.Unlock()
	e.attached.dispatcher = d
}

// IsAttached reports whether a dispatcher is set.
func (e linkEndpoint) IsAttached() bool {
	e.attached.RLock()
	defer e.attached.RUnlock()
	return e.attached.dispatcher != nil
}

// Wait returns at once: the link has no worker goroutine.
func (linkEndpoint) Wait() {}

// ARPHardwareType is none: the link carries bare IP packets.
func (linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader does nothing: there is no link-layer header.
func (linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader accepts every packet: there is no link-layer header.
func (linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close does nothing: the device side (linkDevice.Close) owns the link.
func (linkEndpoint) Close() {}

// SetOnCloseAction does nothing; see Close.
func (linkEndpoint) SetOnCloseAction(func()) {}

// GSOMaxSize is the largest TCP segment gVisor may hand the link.
func (linkEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO is host GSO: gVisor's TCP hands over large segments with a
// partial checksum, and copyOut segments them.
func (linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// copyOut copies pkt into bufs at offset, one packet per buffer, and
// reports how many buffers it filled. A host-GSO TCP segment is cut into
// MSS-sized packets with their own IP and TCP headers and checksums; it
// reports false, and copies nothing, when that takes more than len(bufs).
func copyOut(pkt *stack.PacketBuffer, bufs [][]byte, sizes []int, offset, mtu int) (int, bool) {
	if len(bufs) == 0 {
		return 0, false
	}
	size := pkt.Size()
	gso := pkt.GSOOptions
	if gso.Type != stack.GSOTCPv4 && gso.Type != stack.GSOTCPv6 {
		// A whole packet with its checksums done (UDP, ICMP, TCP without GSO).
		b := bufs[0][offset:]
		if size > len(b) {
			sizes[0] = 0 // larger than any IP packet: dropped
			return 1, true
		}
		r := newPacketReader(pkt)
		sizes[0] = r.read(b[:size])
		return 1, true
	}

	ipLen := len(pkt.NetworkHeader().Slice())
	hdrLen := ipLen + len(pkt.TransportHeader().Slice())
	payload := size - hdrLen
	mss := segmentPayload(hdrLen, int(gso.MSS), mtu)
	if mss <= 0 || payload <= mss {
		mss = max(payload, 1)
	}
	segs := max((payload+mss-1)/mss, 1)
	if segs > len(bufs) {
		return 0, false
	}
	if hdrLen > maxHeaderLen || hdrLen < ipLen+header.TCPMinimumSize {
		sizes[0] = 0 // not a TCP segment gVisor would build: dropped
		return 1, true
	}
	r := newPacketReader(pkt)
	var hdr [maxHeaderLen]byte
	r.read(hdr[:hdrLen])
	tcpHdr := header.TCP(hdr[ipLen:hdrLen])
	seq, flags := tcpHdr.SequenceNumber(), tcpHdr.Flags()
	var src, dst tcpip.Address
	var id uint16
	v4 := gso.Type == stack.GSOTCPv4
	if v4 {
		ip := header.IPv4(hdr[:ipLen])
		src, dst, id = ip.SourceAddress(), ip.DestinationAddress(), ip.ID()
	} else {
		ip := header.IPv6(hdr[:ipLen])
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	for i := range segs {
		n := min(mss, payload-i*mss)
		seg := bufs[i][offset : offset+hdrLen+n]
		copy(seg, hdr[:hdrLen])
		r.read(seg[hdrLen:])
		if v4 {
			ip := header.IPv4(seg)
			ip.SetTotalLength(uint16(len(seg)))
			ip.SetID(id + uint16(i))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		} else {
			header.IPv6(seg).SetPayloadLength(uint16(len(seg) - header.IPv6MinimumSize))
		}
		t := header.TCP(seg[ipLen:])
		t.SetSequenceNumber(seq + uint32(i*mss))
		f := flags
		if i < segs-1 {
			f &^= header.TCPFlagFin | header.TCPFlagPsh // only the last one ends the write
		}
		if i > 0 {
			f &^= header.TCPFlagCwr // only the first one signals the window cut
		}
		t.SetFlags(uint8(f))
		t.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(t)))
		t.SetChecksum(^checksum.Checksum(t, xsum))
		sizes[i] = len(seg)
	}
	return segs, true
}

// What wireguard-go does with the packets Read returns, which decides how
// large the segments should be: it pads each packet to a multiple of 16
// bytes (but not past the MTU) and adds a 16-byte header and a 16-byte
// tag; its Linux bind then
// coalesces runs of equal datagrams into one UDP GSO send of at most
// 65,507 bytes (65,527 over IPv6) and 64 datagrams.
const (
	wgPadding  = 16
	wgOverhead = 32
	udpGSOMax4 = 1<<16 - 1 - header.IPv4MinimumSize - header.UDPMinimumSize
	udpGSOMax6 = 1<<16 - 1 - header.UDPMinimumSize
	udpGSOSegs = 64
	// gsoFrameMax is the largest frame, link header included, that the
	// kernel passes on as one GSO packet; a larger send is cut into
	// datagrams before a local receiver (loopback, a veth) sees it. Found
	// by experiment on Linux 6.18: a 65,535-byte frame stays whole, a
	// 65,536-byte one does not.
	gsoFrameMax = 1<<16 - 1
	ethHeader   = 14
)

// segmentPayload returns the TCP payload per segment for a GSO segment
// with hdrLen bytes of headers, gVisor's MSS mss and the link's MTU mtu: the
// largest size up to mss whose WireGuard datagrams coalesce into sends the
// kernel keeps whole.
// With MTU 1420 gVisor's MSS gives 1,392-byte packets and 1,424-byte
// datagrams, 46 of which make a 65,546-byte frame: the kernel cut every such
// send, and the receiving bind, which reads two GSO messages per recvmmsg,
// then needed a system call per two packets. One padding unit less avoids it.
func segmentPayload(hdrLen, mss, mtu int) int {
	for p := mss; p > 0 && p > mss-4*wgPadding; p-- {
		d := min((hdrLen+p+wgPadding-1)/wgPadding*wgPadding, max(mtu, hdrLen+p)) + wgOverhead
		n4 := min(udpGSOMax4/d, udpGSOSegs)
		n6 := min(udpGSOMax6/d, udpGSOSegs)
		if n4*d+ethHeader+header.IPv4MinimumSize+header.UDPMinimumSize <= gsoFrameMax &&
			n6*d+ethHeader+header.IPv6MinimumSize+header.UDPMinimumSize <= gsoFrameMax {
			return p
		}
	}
	return mss
}

// packetReader reads a packet's bytes, headers first, from the views
// backing it, without flattening it first.
type packetReader struct {
	v    *buffer.View
	data []byte
}

func newPacketReader(pkt *stack.PacketBuffer) packetReader {
	vl, off := pkt.AsViewList()
	r := packetReader{v: vl.Front()}
	for ; r.v != nil; r.v = r.v.Next() {
		s := r.v.AsSlice()
		if off < len(s) {
			r.data = s[off:]
			break
		}
		off -= len(s)
	}
	return r
}

// read fills dst from the packet and returns how much it copied.
func (r *packetReader) read(dst []byte) int {
	n := 0
	for n < len(dst) && r.v != nil {
		if len(r.data) == 0 {
			if r.v = r.v.Next(); r.v != nil {
				r.data = r.v.AsSlice()
			}
			continue
		}
		c := copy(dst[n:], r.data)
		r.data = r.data[c:]
		n += c
	}
	return n
}
