package platform

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LocalListenerOwner returns the user whose socket on this host accepts
// TCP connections to dst (an address of this host, such as a loopback
// upstream's): of the sockets listening on dst's port, the one the kernel
// picks, bound to dst's address rather than to every address, an IPv4
// socket rather than an IPv6 one that also takes IPv4.
//
// It is asked before every new connection to an upstream, so it asks the
// kernel (NETLINK_SOCK_DIAG) for the listeners on that one port: the
// kernel walks its table of listening sockets alone and filters them by
// port, so the answer costs the same however many connections the host
// holds. Reading /proc/net/tcp instead, as ListListeners does, costs in
// proportion to every socket of the host: on a host with 1,500 sockets in
// TIME_WAIT, one read took 9 ms idle and tens of milliseconds under load
// (`go test ./platform -run '^$' -bench LocalListenerOwner` shows both).
// Where sock_diag fails, it reads /proc/net after all.
//
// vishvananda/netlink carries the request, but its socket dumps ask for
// every state and every port, which is the cost avoided here; the request
// and the answer's layout (linux/inet_diag.h) are written here.
func LocalListenerOwner(dst netip.AddrPort) (uid int, found bool, err error) {
	runtime.LockOSThread() // one thread's namespace for every table read
	defer runtime.UnlockOSThread()
	return localListenerOwner(dst, diagListeners, netDir())
}

// localListenerOwner is LocalListenerOwner asking diag, and reading the
// tables in netDir when diag fails: where sock_diag is not to be had (a
// sandbox without it, a kernel without inet_diag), the slower way still
// answers rather than the check going blind.
func localListenerOwner(dst netip.AddrPort, diag func(family uint8, port uint16) ([]diagListener, error), netDir string) (uid int, found bool, err error) {
	var all []diagListener
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ls, err := diag(family, dst.Port())
		if err != nil && family == unix.AF_INET6 && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT)) {
			continue // the kernel runs without IPv6
		}
		if err != nil {
			procLs, perr := listenSockets(netDir)
			if perr != nil {
				return 0, false, fmt.Errorf("platform: listener of %s: %w; reading %s instead: %w", dst, err, netDir, perr)
			}
			all = all[:0]
			for _, l := range procLs {
				all = append(all, diagListener{Listener: l}) // IPv6-only unknown: taken as dual-stack
			}
			break
		}
		all = append(all, ls...)
	}
	best, bestRank := Listener{}, 0
	for _, l := range all {
		if r := acceptRank(l, dst); r > bestRank {
			best, bestRank = l.Listener, r
		}
	}
	return best.UID, bestRank > 0, nil
}

// diagListener is a listening socket as sock_diag describes it.
type diagListener struct {
	Listener
	// v6Only is an IPv6 socket that takes no IPv4 connections.
	v6Only bool
}

// acceptRank ranks how the kernel would pick l for a connection to dst:
// 0 when it would not, and higher for a socket bound to dst's own address
// than for one bound to every address, and for an IPv4 socket than for
// an IPv6 one taking IPv4 (the order of the kernel's listener scores).
func acceptRank(l diagListener, dst netip.AddrPort) int {
	if l.Addr.Port() != dst.Port() {
		return 0
	}
	la, d := l.Addr.Addr(), dst.Addr().Unmap()
	switch {
	case d.Is4() && la.Is4():
		switch {
		case la == d:
			return 4
		case la.IsUnspecified():
			return 3
		}
	case d.Is4() && la.Is4In6() && la.Unmap() == d:
		return 2
	case d.Is4() && la == netip.IPv6Unspecified() && !l.v6Only:
		return 1
	case d.Is6() && la.Is6() && !la.Is4In6():
		switch {
		case la == d:
			return 4
		case la.IsUnspecified():
			return 3
		}
	}
	return 0
}

// diagListeners asks the kernel for the TCP sockets of family listening
// on port (its listening table alone: the states mask holds LISTEN only).
func diagListeners(family uint8, port uint16) ([]diagListener, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.AddData(diagRequest{family: family, port: port})
	var ls []diagListener
	var perr error
	err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
		l, ok, err := parseInetDiagMsg(msg)
		if err != nil {
			perr = err
			return false
		}
		if ok {
			ls = append(ls, l)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return ls, perr
}

// tcpStateListen is TCP_LISTEN in include/net/tcp_states.h.
const tcpStateListen = 10

// diagRequest is struct inet_diag_req_v2 asking for the listening TCP
// sockets of one family, bound to one port.
type diagRequest struct {
	family uint8
	port   uint16
}

// sizeofDiagRequest is sizeof(struct inet_diag_req_v2): family, protocol,
// ext, pad, states, then inet_diag_sockid (48 bytes).
const sizeofDiagRequest = 56

// Len implements nl.NetlinkRequestData.
func (r diagRequest) Len() int { return sizeofDiagRequest }

// Serialize implements nl.NetlinkRequestData.
func (r diagRequest) Serialize() []byte {
	b := make([]byte, sizeofDiagRequest)
	b[0] = r.family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:8], 1<<tcpStateListen)
	binary.BigEndian.PutUint16(b[8:10], r.port) // idiag_sport; dport stays 0
	return b
}

// sizeofInetDiagMsg is sizeof(struct inet_diag_msg): family, state, timer,
// retrans, inet_diag_sockid (48 bytes), expires, rqueue, wqueue, uid, inode.
const sizeofInetDiagMsg = 72

// inetDiagSKV6Only is INET_DIAG_SKV6ONLY, the attribute that says whether
// an IPv6 socket takes no IPv4 connections; the kernel sends it for every
// listening IPv6 socket.
const inetDiagSKV6Only = 11

// parseInetDiagMsg reads one struct inet_diag_msg and the attribute
// INET_DIAG_SKV6ONLY after it (others are skipped). ok is false for a
// socket that is not listening, which the request did not ask for.
func parseInetDiagMsg(b []byte) (l diagListener, ok bool, err error) {
	if len(b) < sizeofInetDiagMsg {
		return diagListener{}, false, fmt.Errorf("inet_diag_msg of %d bytes, want at least %d", len(b), sizeofInetDiagMsg)
	}
	if b[1] != tcpStateListen {
		return diagListener{}, false, nil
	}
	port := binary.BigEndian.Uint16(b[4:6])
	var addr netip.Addr
	switch b[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		return diagListener{}, false, fmt.Errorf("inet_diag_msg of family %d", b[0])
	}
	l = diagListener{Listener: Listener{
		Addr:  netip.AddrPortFrom(addr, port),
		UID:   int(binary.NativeEndian.Uint32(b[64:68])),
		Inode: uint64(binary.NativeEndian.Uint32(b[68:72])),
	}}
	// struct rtattr: length (header included), type, then the value,
	// each attribute padded to 4 bytes. Not nl.ParseRouteAttr: it slices
	// past the end of a last attribute whose padding is missing, and
	// panics, where this answers an error or stops.
	for rest := b[sizeofInetDiagMsg:]; len(rest) >= 4; {
		n := int(binary.NativeEndian.Uint16(rest[0:2]))
		if n < 4 || n > len(rest) {
			return diagListener{}, false, fmt.Errorf("inet_diag attribute of length %d in %d bytes", n, len(rest))
		}
		if binary.NativeEndian.Uint16(rest[2:4]) == inetDiagSKV6Only && n >= 5 {
			l.v6Only = rest[4] != 0
		}
		rest = rest[min((n+3)&^3, len(rest)):]
	}
	return l, true, nil
}
