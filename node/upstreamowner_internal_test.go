package node

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
)

// bareNode is a Node with just what the owner checks use.
func bareNode(served ...localapi.ServeRequest) *Node {
	n := &Node{log: slog.New(slog.DiscardHandler), ownerOf: platform.LocalListenerOwner}
	n.mu.upstreamOwner, n.mu.upstreamPin, n.mu.pinUID = map[uint16]int{}, map[uint16]int{}, map[string]int{}
	n.mu.served = served
	return n
}

// listen4 listens on a free port of 127.0.0.1, and says which.
func listen4(t *testing.T) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// The owner checks that came out of the review of --upstream-user, each
// of which failed before its fix.
func TestUpstreamOwnerCheckFailsClosed(t *testing.T) {
	t.Run("a pin on a URL without a port is the pin of port 80", func(t *testing.T) {
		n := bareNode()
		n.noteUpstreamOwner(localapi.ServeRequest{Name: "ehr", Upstream: "http://127.0.0.1/mcp", UpstreamUser: "4242"})
		if uid, ok := n.mu.upstreamPin[80]; !ok || uid != 4242 {
			t.Fatalf("pins = %v; want port 80 pinned to 4242", n.mu.upstreamPin)
		}
	})
	t.Run("an unpinned service on a pinned port keeps the pin", func(t *testing.T) {
		a := localapi.ServeRequest{Name: "a", Upstream: "http://127.0.0.1:39999/a", UpstreamUser: "4242"}
		b := localapi.ServeRequest{Name: "b", Upstream: "http://127.0.0.1:39999/b"}
		n := bareNode(a, b)
		n.noteUpstreamOwner(a)
		n.noteUpstreamOwner(b)
		if n.mu.upstreamPin[39999] != 4242 {
			t.Fatalf("pins after serving b = %v; want 39999 pinned to 4242", n.mu.upstreamPin)
		}
		n.pinUpstreamsLocked()
		if n.mu.upstreamPin[39999] != 4242 {
			t.Fatalf("pins rebuilt = %v; want 39999 pinned to 4242", n.mu.upstreamPin)
		}
	})
	t.Run("a pin wins over the owner learnt", func(t *testing.T) {
		ln, port := listen4(t)
		defer ln.Close()
		n := bareNode()
		n.mu.upstreamOwner[port] = os.Getuid() // what serving an unpinned service learnt
		n.mu.upstreamPin[port] = 4242
		if err := n.checkUpstreamOwner(ln.Addr().String()); err == nil {
			t.Fatal("a listener of the learnt owner passed a pin to another user")
		}
	})
	t.Run("a port no served service uses learns nothing", func(t *testing.T) {
		ln, port := listen4(t)
		defer ln.Close()
		// The stragglers of an unserved service find neither its pin nor
		// anything learnt.
		n := bareNode()
		if err := n.checkUpstreamOwner(ln.Addr().String()); err == nil {
			t.Fatal("a connection to a port no served service uses passed")
		}
		if _, ok := n.mu.upstreamOwner[port]; ok {
			t.Fatal("an owner was learnt for a port no served service uses")
		}
		// A served upstream nobody listened on at serve time: the first
		// owner is learnt.
		n = bareNode(localapi.ServeRequest{Name: "ehr", Upstream: "http://" + ln.Addr().String() + "/mcp"})
		var logged bytes.Buffer
		n.log = slog.New(slog.NewTextHandler(&logged, nil))
		if err := n.checkUpstreamOwner(ln.Addr().String()); err != nil || n.mu.upstreamOwner[port] != os.Getuid() {
			t.Fatalf("first connection of a served upstream: %v, learnt %v", err, n.mu.upstreamOwner)
		}
		// Trusting whoever held the port first is said, once, with who.
		if err := n.checkUpstreamOwner(ln.Addr().String()); err != nil {
			t.Fatalf("second connection: %v", err)
		}
		if got := strings.Count(logged.String(), "learnt at its first connection"); got != 1 || !strings.Contains(logged.String(), fmt.Sprintf("uid %d", os.Getuid())) {
			t.Fatalf("log after two connections, want the owner learnt said once with its uid:\n%s", logged.String())
		}
	})
	t.Run("a stdio service's bridge is not reported as trust on first use", func(t *testing.T) {
		// The bridge is the node's own listener, and --upstream-user is
		// refused for --stdio: its first connection is no cause to warn.
		req := localapi.ServeRequest{Name: "files", Stdio: "cat"}
		n := bareNode(req)
		var logged bytes.Buffer
		n.log = slog.New(slog.NewTextHandler(&logged, nil))
		u, err := n.upstreamURL(req)
		if err != nil {
			t.Fatal(err)
		}
		defer n.stopAllStdio()
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.checkUpstreamOwner(pu.Host); err != nil {
			t.Fatalf("first connection to the bridge: %v", err)
		}
		if strings.Contains(logged.String(), "first connection") {
			t.Fatalf("the bridge's first connection was reported as trust on first use:\n%s", logged.String())
		}
	})
	t.Run("a lookup that fails is refused when an owner is known", func(t *testing.T) {
		n := bareNode(localapi.ServeRequest{Name: "ehr", Upstream: "http://127.0.0.1:39997/mcp"})
		n.ownerOf = func(netip.AddrPort) (int, bool, error) { return 0, false, errors.New("sock_diag: not here") }
		n.mu.upstreamOwner[39998] = 0
		if err := n.checkUpstreamOwner("127.0.0.1:39998"); err == nil {
			t.Fatal("a failed lookup passed a check with a known owner")
		}
		if err := n.checkUpstreamOwner("127.0.0.1:39997"); err != nil {
			t.Fatalf("a failed lookup with nothing known: %v; want it let through (nothing to compare)", err)
		}
	})
	t.Run("a second service may not pin the port to another user", func(t *testing.T) {
		n := bareNode(localapi.ServeRequest{Name: "a", Upstream: "http://127.0.0.1:39999/a", UpstreamUser: "4242"})
		err := n.checkUpstreamUser(localapi.ServeRequest{Name: "b", Upstream: "http://127.0.0.1:39999/b", UpstreamUser: "4343"})
		if err == nil {
			t.Fatal("two pins to two users on one port were accepted")
		}
	})
	t.Run("a listener gone by the time of the check is refused", func(t *testing.T) {
		ln, port := listen4(t)
		n := bareNode()
		n.mu.upstreamOwner[port] = 4242 // learnt: another user than this test's
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ln.Close() // the squatter accepts, then closes its listener before the check
		if err := n.checkUpstreamOwner(c.RemoteAddr().String()); err == nil {
			t.Fatal("a connection whose listener is gone passed a check with a known owner")
		}
	})
}
