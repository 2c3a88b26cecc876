package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

// TestServeLockdownKeepsTheHostFirewallInStep drives the node's firewall
// through its life: installed at start, a lockdown added by serve and
// refused where it cannot hold, repaired after someone deletes the table,
// kept through exit and restart, lifted by unserve, and the table removed
// on exit once no lockdown is left.
func TestServeLockdownKeepsTheHostFirewallInStep(t *testing.T) {
	// A namespace of its own, so the test never firewalls this machine.
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "nodefw", "srv").Handle
	fw := platform.NewFirewall(platform.FirewallInNamespace(int(ns)))
	m := meshtest.New(t, meshtest.Options{})
	dir := t.TempDir()
	start := func(token string) *node.Node {
		t.Helper()
		n, err := node.Start(context.Background(), node.Config{StateDir: dir, Coordinator: m.URL, Token: token, Hostname: "srv", Firewall: fw, SocketPath: "-"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := start(m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)}))
	defer func() { n.Close() }()

	none := platform.FirewallRules{}
	locked := platform.FirewallRules{LockdownPorts: []uint16{9000}}
	if err := fw.Check(none); err != nil {
		t.Fatalf("after start: %v", err)
	}
	ctx := context.Background()
	if _, err := n.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: "http://127.0.0.1:9000/mcp", Lockdown: true}); err != nil {
		t.Fatalf("serve --lockdown: %v", err)
	}
	if err := fw.Check(locked); err != nil {
		t.Errorf("after serve --lockdown: %v", err)
	}
	_, err := n.Serve(ctx, localapi.ServeRequest{Name: "files", Stdio: "cat", Lockdown: true})
	if err == nil || !strings.Contains(err.Error(), "--stdio") {
		t.Errorf("serve --stdio --lockdown = %v, want an error naming --stdio", err)
	}
	if err := fw.Check(locked); err != nil {
		t.Errorf("a refused lockdown changed the rules: %v", err)
	}

	// Someone flushes our table; the node puts it back.
	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(node.FirewallCheckEvery + 5*time.Second)
	for fw.Check(locked) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not repair its firewall within %v", node.FirewallCheckEvery+5*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Exit keeps the lockdown (the upstream runs on while the node is
	// stopped); a restart keeps it too.
	n.Close()
	if err := fw.Check(locked); err != nil {
		t.Errorf("after exit, the lockdown is gone: %v", err)
	}
	n = start("")
	if err := fw.Check(locked); err != nil {
		t.Errorf("after restart: %v", err)
	}
	if err := n.Unserve(ctx, "ehr"); err != nil {
		t.Fatal(err)
	}
	if err := fw.Check(none); err != nil {
		t.Errorf("after unserve: %v", err)
	}
	// With no lockdown left, exit removes the table.
	n.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(platform.FirewallTable, nftables.TableFamilyINet); err == nil {
		t.Error("table inet mcpmesh is still there after a node without lockdowns exited")
	}
}

// TestLockdownNeedsAFirewall: a node that does not manage the host
// firewall refuses --lockdown instead of pretending.
func TestLockdownNeedsAFirewall(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	n := m.AddNode("srv")
	_, err := n.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: "http://127.0.0.1:9000/mcp", Lockdown: true})
	if err == nil || !strings.Contains(err.Error(), "--tun") {
		t.Fatalf("serve --lockdown without a firewall = %v, want an error saying to use --tun", err)
	}
	if svc := n.Netmap().Catalog; len(svc) != 0 {
		t.Errorf("the refused service is in the catalog: %+v", svc)
	}
}
