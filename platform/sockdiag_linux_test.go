package platform

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LocalListenerOwner finds this process's user behind loopback and
// wildcard listeners, and nothing behind a free port or a connection's
// port; on every loopback or wildcard listener of the host it agrees with
// the kernel's socket tables as /proc shows them.
func TestLocalListenerOwnerFindsTheListenersUser(t *testing.T) {
	var ports []uint16
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "[::]:0", "0.0.0.0:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil && strings.HasPrefix(addr, "[") {
			t.Logf("no IPv6: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, p := range ports {
		if uid, found, err := LocalListenerOwner(p); err != nil || !found || uid != os.Getuid() {
			t.Errorf("LocalListenerOwner(%d) = %d, %v, %v; want %d, true", p, uid, found, err, os.Getuid())
		}
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0]))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := uint16(c.LocalAddr().(*net.TCPAddr).Port)
	free := freePort(t)
	for _, p := range []uint16{client, free} {
		if uid, found, err := LocalListenerOwner(p); err != nil || found {
			t.Errorf("LocalListenerOwner(%d), a port nothing listens on = %d, %v, %v; want not found", p, uid, found, err)
		}
	}

	ls, err := ListListeners()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		a := l.Addr.Addr().Unmap()
		if !a.IsLoopback() && !a.IsUnspecified() {
			continue
		}
		if uid, found, err := LocalListenerOwner(l.Addr.Port()); err != nil || !found || uid != l.UID {
			t.Errorf("LocalListenerOwner(%d) = %d, %v, %v; /proc/net says uid %d listens on %s", l.Addr.Port(), uid, found, err, l.UID, l.Addr)
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

// formatInetDiagMsg is the kernel's side of parseInetDiagMsg.
func formatInetDiagMsg(l Listener, state uint8) []byte {
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
	return b
}

// FuzzParseInetDiagMsg: no input panics; what parses formats back to the
// same bytes (its first 72), and short input is an error.
func FuzzParseInetDiagMsg(f *testing.F) {
	f.Add(formatInetDiagMsg(Listener{Addr: netip.MustParseAddrPort("127.0.0.1:9000"), UID: 998, Inode: 7}, tcpStateListen))
	f.Add(formatInetDiagMsg(Listener{Addr: netip.MustParseAddrPort("[::]:443"), UID: 0, Inode: 1}, tcpStateListen))
	f.Add(formatInetDiagMsg(Listener{Addr: netip.MustParseAddrPort("[::ffff:127.0.0.1]:80"), UID: 65534}, tcpStateListen))
	f.Add([]byte{2, 10, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, ok, err := parseInetDiagMsg(b)
		if len(b) < sizeofInetDiagMsg && err == nil {
			t.Fatalf("%d bytes parsed", len(b))
		}
		if !ok {
			return
		}
		want := make([]byte, sizeofInetDiagMsg)
		copy(want, b)
		// Fields the parser does not read are zero in the formatted form.
		for i := 2; i < 4; i++ {
			want[i] = 0
		}
		for i := 6; i < 8; i++ {
			want[i] = 0
		}
		if l.Addr.Addr().Is4() {
			clear(want[12:24])
		}
		clear(want[24:64])
		if got := formatInetDiagMsg(l, b[1]); string(got) != string(want) {
			t.Fatalf("parsed %+v, formats back as\n%x\nwant\n%x", l, got, want)
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
		if _, found, err := LocalListenerOwner(port); err != nil || !found {
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
