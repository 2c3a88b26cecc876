package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

const echoPort = 7000

type nodeT = node.Node

// serveEcho runs a TCP echo server on the node's mesh address.
func serveEcho(t *testing.T, n *node.Node) {
	t.Helper()
	ln, err := n.Tunnel().ListenTCP(echoPort)
	if err != nil {
		t.Fatalf("listen on %s: %v", n.Name(), err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// echo dials dst's echo server from src over the mesh and checks the reply.
func echo(ctx context.Context, src, dst *node.Node, addr netip.Addr) error {
	c, err := src.Tunnel().DialContext(ctx, "tcp", net.JoinHostPort(addr.String(), strconv.Itoa(echoPort)))
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	msg := "hello from " + src.Name()
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

func mustEcho(t *testing.T, src, dst *node.Node) {
	t.Helper()
	for _, a := range dst.Addresses() {
		// Generous: a peer that restarted is reached once a new handshake
		// completes, which can take WireGuard's 5 s retry (twice on a
		// loaded -race run); reachability, not speed, is asserted here.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := echo(ctx, src, dst, a)
		cancel()
		if err != nil {
			t.Fatalf("%s → %s (%s): %v", src.Name(), dst.Name(), a, err)
		}
	}
}

func TestThreeNodesReachEachOthersTCPServers(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	a, b, c := m.AddNode("node-a"), m.AddNode("node-b"), m.AddNode("node-c")
	m.WaitPeers(a, "node-b", "node-c")
	m.WaitPeers(b, "node-a", "node-c")
	m.WaitPeers(c, "node-a", "node-b")
	nodes := []*node.Node{a, b, c}
	for _, n := range nodes {
		serveEcho(t, n)
	}
	for _, src := range nodes {
		for _, dst := range nodes {
			if src != dst {
				mustEcho(t, src, dst)
			}
		}
	}
	// The serving side knows who called from the tunnel alone.
	p, err := b.WhoIs(a.Addresses()[0])
	if err != nil || p.Name != "node-a" {
		t.Fatalf("WhoIs(a's address) on b = %v, %v; want node-a", p.Name, err)
	}
}

func netipPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
