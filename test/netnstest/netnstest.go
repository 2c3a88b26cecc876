// Package netnstest gives tests network namespaces of their own, so they
// can build LANs, bind every address and try attacks without touching the
// host's network. Tests that use it need root; they fail instead of
// skipping when CI is set, because CI runs as root and must run them.
package netnstest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// RequireRoot skips t without root, except under CI, where it fails.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err != nil {
			t.Fatalf("network-namespace test needs ip(8): %v", err)
		}
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("network-namespace test needs root, and CI must run it")
	}
	t.Skip("network-namespace test needs root")
}

// IP runs ip(8) and fails t on an error; it returns the output.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NS is a network namespace that lives until the test ends.
type NS struct {
	Name   string
	Handle netns.NsHandle
	t      testing.TB
}

// New creates the namespace "mcpmesh-<tag><pid>-<role>" with loopback up and
// deletes it (and every interface in it) when t ends.
func New(t testing.TB, tag, role string) *NS {
	t.Helper()
	name := fmt.Sprintf("mcpmesh-%s%d-%s", tag, os.Getpid(), role)
	IP(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	IP(t, "-n", name, "link", "set", "lo", "up")
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	return &NS{Name: name, Handle: h, t: t}
}

// IP runs ip(8) inside the namespace ("ip -n NAME args").
func (ns *NS) IP(args ...string) string {
	ns.t.Helper()
	return IP(ns.t, append([]string{"-n", ns.Name}, args...)...)
}

// Command is name run inside the namespace ("ip netns exec").
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs f on an OS thread moved into the namespace. The thread never
// returns to the scheduler (its goroutine ends still locked, so the runtime
// destroys it, or parks it for good when it is the main thread), so the
// switch cannot leak into other goroutines. Beware the main-thread case:
// /proc/self/net follows the main thread, so read /proc/thread-self/net. Sockets f
// creates stay in the namespace and can be used from anywhere afterwards.
func (ns *NS) Do(f func()) {
	ns.t.Helper()
	if err := ns.run(f); err != nil {
		ns.t.Fatal(err)
	}
}

// run is Do that returns its error, for goroutines other than the test's.
func (ns *NS) run(f func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns.Handle); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		f()
		done <- nil
	}()
	return <-done
}

// Dial connects from the namespace to addr ("host:port") within timeout,
// from src when it is not empty, and closes the connection.
func (ns *NS) Dial(addr, src string, timeout time.Duration) error {
	ns.t.Helper()
	var err error
	ns.Do(func() {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var c net.Conn
		if c, err = d.Dial("tcp", addr); err == nil {
			c.Close()
		}
	})
	return err
}

// DialContext dials from the namespace; it suits http.Transport.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if rerr := ns.run(func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	}); rerr != nil {
		return nil, rerr
	}
	return c, err
}

// HTTPClient is an HTTP client whose connections start in the namespace,
// as a program running there would make them.
func (ns *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true},
	}
}

// Listen opens a TCP listener in the namespace that accepts connections and
// closes them at once; it is closed when the test ends.
func (ns *NS) Listen(addr string) net.Listener {
	ns.t.Helper()
	var l net.Listener
	var err error
	ns.Do(func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		ns.t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	ns.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// Link joins a and b with a veth pair named ifA in a and ifB in b.
func Link(t testing.TB, a *NS, ifA string, b *NS, ifB string) {
	t.Helper()
	a.IP("link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name)
	a.IP("link", "set", ifA, "up")
	b.IP("link", "set", ifB, "up")
}
