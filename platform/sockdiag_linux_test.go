package platform

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LocalListenerOwner finds this process's user behind the listener that
// takes connections to an address, and nothing where no listener would:
// a free port, a connection's port, an address the listener is not bound
// to, the other IP version than it takes. On every loopback or wildcard
// listener of the host it agrees with the kernel's socket tables as /proc
// shows them.
func TestLocalListenerOwnerFindsTheListenersUser(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	for _, tc := range []struct {
		network, listen string
		takes           []netip.Addr
		doesNotTake     []netip.Addr
	}{
		{"tcp4", "127.0.0.1:0", []netip.Addr{v4}, []netip.Addr{v6, netip.MustParseAddr("127.0.0.2")}},
		{"tcp4", "0.0.0.0:0", []netip.Addr{v4, netip.MustParseAddr("127.0.0.2")}, []netip.Addr{v6}},
		{"tcp6", "[::1]:0", []netip.Addr{v6}, []netip.Addr{v4}},
		{"tcp", "[::]:0", []netip.Addr{v6, v4}, nil}, // Go's wildcard listener takes IPv4 too
	} {
		ln, err := net.Listen(tc.network, tc.listen)
		if err != nil && strings.HasPrefix(tc.listen, "[") {
			t.Logf("no IPv6: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		for _, a := range tc.takes {
			dst := netip.AddrPortFrom(a, port)
			if uid, found, err := LocalListenerOwner(dst); err != nil || !found || uid != os.Getuid() {
				t.Errorf("listening on %s: LocalListenerOwner(%s) = %d, %v, %v; want %d, true", ln.Addr(), dst, uid, found, err, os.Getuid())
			}
		}
		for _, a := range tc.doesNotTake {
			dst := netip.AddrPortFrom(a, port)
			if uid, found, err := LocalListenerOwner(dst); err != nil || found {
				t.Errorf("listening on %s: LocalListenerOwner(%s) = %d, %v, %v; want nothing found", ln.Addr(), dst, uid, found, err)
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []uint16{uint16(c.LocalAddr().(*net.TCPAddr).Port), freePort(t)} {
		if uid, found, err := LocalListenerOwner(netip.AddrPortFrom(v4, p)); err != nil || found {
			t.Errorf("LocalListenerOwner(127.0.0.1:%d), a port nothing listens on = %d, %v, %v; want not found", p, uid, found, err)
		}
	}

	ls, err := ListListeners()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		a := l.Addr.Addr().Unmap()
		switch {
		case a == netip.IPv4Unspecified():
			a = v4
		case a == netip.IPv6Unspecified():
			a = v6
		case !a.IsLoopback():
			continue
		}
		dst := netip.AddrPortFrom(a, l.Addr.Port())
		if uid, found, err := LocalListenerOwner(dst); err != nil || !found || uid != l.UID {
			t.Errorf("LocalListenerOwner(%s) = %d, %v, %v; /proc/net says uid %d listens on %s", dst, uid, found, err, l.UID, l.Addr)
		}
	}
}

// Where sock_diag fails, the owner comes from the socket tables in /proc
// instead, the same as sock_diag's; where both fail, the error says so.
func TestLocalListenerOwnerFallsBackToProc(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	broken := func(uint8, uint16) ([]diagListener, error) { return nil, unix.EPROTONOSUPPORT }
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if uid, found, err := localListenerOwner(dst, broken, netDir()); err != nil || !found || uid != os.Getuid() {
		t.Errorf("without sock_diag: %d, %v, %v; want %d from /proc", uid, found, err, os.Getuid())
	}
	if _, found, err := localListenerOwner(dst, broken, t.TempDir()); err == nil || found {
		t.Errorf("without sock_diag or /proc: found %v, err %v; want an error", found, err)
	}
}

// acceptRank follows the kernel's choice among listeners on one port.
func TestAcceptRankPrefersTheBoundAddressThenIPv4(t *testing.T) {
	l := func(addr string, v6Only bool) diagListener {
		return diagListener{Listener: Listener{Addr: netip.MustParseAddrPort(addr)}, v6Only: v6Only}
	}
	for _, tc := range []struct {
		l    diagListener
		dst  string
		want int
	}{
		{l("127.0.0.1:80", false), "127.0.0.1:80", 4},
		{l("0.0.0.0:80", false), "127.0.0.1:80", 3},
		{l("[::ffff:127.0.0.1]:80", false), "127.0.0.1:80", 2},
		{l("[::]:80", false), "127.0.0.1:80", 1},
		{l("[::]:80", true), "127.0.0.1:80", 0},
		{l("127.0.0.1:80", false), "127.0.0.1:81", 0},
		{l("127.0.0.1:80", false), "127.0.0.2:80", 0},
		{l("127.0.0.1:80", false), "[::1]:80", 0},
		{l("0.0.0.0:80", false), "[::1]:80", 0},
		{l("[::1]:80", false), "[::1]:80", 4},
		{l("[::]:80", true), "[::1]:80", 3},
		{l("[::1]:80", false), "127.0.0.1:80", 0},
		{l("[::ffff:127.0.0.1]:80", false), "[::1]:80", 0},
		{l("0.0.0.0:80", false), "[::ffff:127.0.0.1]:80", 3}, // a mapped destination is IPv4
	} {
		if got := acceptRank(tc.l, netip.MustParseAddrPort(tc.dst)); got != tc.want {
			t.Errorf("acceptRank(%s v6only=%v, %s) = %d, want %d", tc.l.Addr, tc.l.v6Only, tc.dst, got, tc.want)
		}
	}
}

// freePort is a TCP port nothing listened on a moment ago.
func freePort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// formatInetDiagMsg is the kernel's side of parseInetDiagMsg: the message,
// then for an IPv6 socket its INET_DIAG_SKV6ONLY attribute, after another
// attribute the parser skips.
func formatInetDiagMsg(l diagListener, state uint8) []byte {
	b := make([]byte, sizeofInetDiagMsg)
	a := l.Addr.Addr()
	if a.Is4() {
		b[0] = unix.AF_INET
		copy(b[8:12], a.AsSlice())
	} else {
		b[0] = unix.AF_INET6
		copy(b[8:24], a.AsSlice())
	}
	b[1] = state
	binary.BigEndian.PutUint16(b[4:6], l.Addr.Port())
	binary.NativeEndian.PutUint32(b[64:68], uint32(l.UID))
	binary.NativeEndian.PutUint32(b[68:72], uint32(l.Inode))
	attr := func(typ uint16, val ...byte) {
		h := make([]byte, 4)
		binary.NativeEndian.PutUint16(h[0:2], uint16(4+len(val)))
		binary.NativeEndian.PutUint16(h[2:4], typ)
		b = append(append(b, h...), val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	attr(5, 0) // INET_DIAG_TOS
	if !a.Is4() {
		v := byte(0)
		if l.v6Only {
			v = 1
		}
		attr(inetDiagSKV6Only, v)
	}
	return b
}

// FuzzParseInetDiagMsg: no input panics, short input is an error, and
// what the kernel's layout says reads back as itself.
func FuzzParseInetDiagMsg(f *testing.F) {
	f.Add(formatInetDiagMsg(diagListener{Listener: Listener{Addr: netip.MustParseAddrPort("127.0.0.1:9000"), UID: 998, Inode: 7}}, tcpStateListen), "127.0.0.1:9000", uint32(998), false)
	f.Add(formatInetDiagMsg(diagListener{Listener: Listener{Addr: netip.MustParseAddrPort("[::]:443"), UID: 0, Inode: 1}, v6Only: true}, tcpStateListen), "[::]:443", uint32(0), true)
	f.Add([]byte{2, 10, 0}, "[::ffff:127.0.0.1]:80", uint32(65534), false)
	f.Fuzz(func(t *testing.T, b []byte, addr string, uid uint32, v6Only bool) {
		if l, ok, err := parseInetDiagMsg(b); len(b) < sizeofInetDiagMsg && (err == nil || ok) {
			t.Fatalf("%d bytes parsed: %+v", len(b), l)
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.Addr().Zone() != "" {
			return
		}
		want := diagListener{Listener: Listener{Addr: ap, UID: int(uid), Inode: uint64(uid) / 3}, v6Only: v6Only && !ap.Addr().Is4()}
		got, ok, err := parseInetDiagMsg(formatInetDiagMsg(want, tcpStateListen))
		if err != nil || !ok || got != want {
			t.Fatalf("read back %+v, %v, %v; want %+v", got, ok, err, want)
		}
	})
}

// BenchmarkLocalListenerOwner asks for a listener's owner as the proxy
// does before each new upstream connection, on a host that also holds
// 2,000 connections in TIME_WAIT (made here, on loopback), against
// reading the same answer from /proc/net/tcp and tcp6 in the same run.
//
//	go test ./platform -run '^$' -bench LocalListenerOwner -benchtime 200x
func BenchmarkLocalListenerOwner(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	deadline := time.Now().Add(30 * time.Second)
	for range 2000 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil || time.Now().After(deadline) {
			b.Fatalf("making TIME_WAIT connections: %v", err)
		}
		c.Close()
	}
	viaProc := func() int {
		ls, err := listenSockets(netDir())
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range ls {
			if l.Addr.Port() == port {
				return l.UID
			}
		}
		b.Fatal("not found in /proc/net")
		return 0
	}
	var diag, proc time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, found, err := LocalListenerOwner(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)); err != nil || !found {
			b.Fatalf("LocalListenerOwner: %v, %v", found, err)
		}
		t1 := time.Now()
		viaProc()
		diag, proc = diag+t1.Sub(t0), proc+time.Since(t1)
	}
	b.ReportMetric(float64(diag.Microseconds())/float64(b.N), "sockdiag-µs/op")
	b.ReportMetric(float64(proc.Microseconds())/float64(b.N), "procnet-µs/op")
	b.ReportMetric(float64(proc)/float64(diag), "speedup")
	b.ReportMetric(0, "ns/op")
}
