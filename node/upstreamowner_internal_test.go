package node

import (
	"log/slog"
	"net"
	"testing"

	"github.com/mcpmesh/mcpmesh/node/localapi"
)

// bareNode is a Node with just what the owner checks use.
func bareNode(served ...localapi.ServeRequest) *Node {
	n := &Node{log: slog.New(slog.DiscardHandler)}
	n.mu.upstreamOwner, n.mu.upstreamPin = map[uint16]int{}, map[uint16]int{}
	n.mu.served = served
	return n
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
		n.pinUpstreamsLocked()
		if n.mu.upstreamPin[39999] != 4242 {
			t.Fatalf("pins = %v; want 39999 pinned to 4242", n.mu.upstreamPin)
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
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
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
