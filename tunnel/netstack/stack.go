package netstack

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the stack's only NIC, the link to wireguard-go.
const nicID tcpip.NICID = 1

// newStack builds the gVisor stack of one tunnel: one NIC on l holding
// addrs, routing everything to it, with the TCP options of tcpOptions.
func newStack(l *link, addrs []netip.Addr) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	fail := func(err error) (*stack.Stack, error) {
		s.Close()
		return nil, err
	}
	for _, o := range tcpOptions() {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fail(fmt.Errorf("netstack: TCP option %s: %s", o.name, err))
		}
	}
	if err := s.CreateNIC(nicID, linkEndpoint{l}); err != nil {
		return fail(fmt.Errorf("netstack: create NIC: %s", err))
	}
	var has4, has6 bool
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail(fmt.Errorf("netstack: add address %s: %s", a, err))
		}
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
	}
	if has4 {
		s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if has6 {
		s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	return s, nil
}

type tcpOption struct {
	name string
	opt  tcpip.SettableTransportProtocolOption
}

// tcpOptions are the stack-wide TCP settings. gVisor leaves SACK off by
// default, and without it one lost segment costs a retransmission timeout.
// It also leaves receive-buffer moderation off, so a connection's window
// stays at the 1 MiB default whatever the path's bandwidth-delay product;
// with it the window grows as the reader keeps up, up to the maxima below.
// The defaults stay at 1 MiB: these are limits, not allocations, but an
// idle connection should not be allowed to pin more.
func tcpOptions() []tcpOption {
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: 6 << 20}
	return []tcpOption{
		{"SACK", &sack},
		{"receive-buffer moderation", &moderate},
		{"receive buffer sizes", &rcv},
		{"send buffer sizes", &snd},
	}
}

// fullAddr converts a mesh address and port to gVisor's form on the NIC.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}
