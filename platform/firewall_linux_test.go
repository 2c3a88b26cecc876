package platform

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

// The firewall test builds a small network of namespaces, as an attacker
// on the server's LAN would see it:
//
//	attacker (10.98.0.1, fd00:98::1) ──LAN veth── server (10.98.0.2, fd00:98::2)
//	mesh peer (100.64.0.1)           ──"mcpmesh0"── server (100.64.0.2, fd7a:115c:a1e0::2)
//
// The server's "mcpmesh0" is a veth standing in for the TUN interface: the
// firewall only cares about interface names, and a veth lets the test put
// packets on it from the mesh side. The attacker routes the mesh prefixes
// over the LAN to the server, which Linux would happily accept.
type fwNet struct {
	attacker, server, peer *netnstest.NS
}

const (
	fwProxyPort    = 7811 // the node's MCP proxy, on the mesh address only
	fwUpstreamPort = 9000 // a shadow MCP server bound to every address
	fwOtherPort    = 8080 // an unrelated service on every address
)

func newFwNet(t *testing.T) *fwNet {
	t.Helper()
	netnstest.RequireRoot(t)
	att, srv, peer := netnstest.New(t, "fw", "attacker"), netnstest.New(t, "fw", "server"), netnstest.New(t, "fw", "peer")
	// The LAN.
	netnstest.Link(t, att, "lan0", srv, "lan0")
	att.IP("addr", "add", "10.98.0.1/24", "dev", "lan0")
	att.IP("addr", "add", "fd00:98::1/64", "dev", "lan0", "nodad")
	srv.IP("addr", "add", "10.98.0.2/24", "dev", "lan0")
	srv.IP("addr", "add", "fd00:98::2/64", "dev", "lan0", "nodad")
	// The mesh interface.
	netnstest.Link(t, peer, "mesh0", srv, "mcpmesh0")
	peer.IP("addr", "add", "100.64.0.1/32", "dev", "mesh0")
	srv.IP("addr", "add", "100.64.0.2/32", "dev", "mcpmesh0")
	srv.IP("addr", "add", "fd7a:115c:a1e0::2/128", "dev", "mcpmesh0", "nodad")
	peer.IP("route", "add", "100.64.0.0/10", "dev", "mesh0")
	srv.IP("route", "add", "100.64.0.0/10", "dev", "mcpmesh0")
	// The attacker routes the mesh over the LAN to the server.
	att.IP("route", "add", "100.64.0.0/10", "via", "10.98.0.2")
	att.IP("-6", "route", "add", "fd7a:115c:a1e0::/48", "via", "fd00:98::2")
	return &fwNet{attacker: att, server: srv, peer: peer}
}

// A drop shows as a connect timeout: nothing comes back.
const (
	reachBound   = 3 * time.Second
	blockedBound = 500 * time.Millisecond
)

func mustReach(t *testing.T, ns *netnstest.NS, who, addr string) {
	t.Helper()
	if err := ns.Dial(addr, "", reachBound); err != nil {
		t.Errorf("%s cannot reach %s: %v", who, addr, err)
	}
}

func mustNotReach(t *testing.T, ns *netnstest.NS, who, addr string) {
	t.Helper()
	if err := ns.Dial(addr, "", blockedBound); err == nil {
		t.Errorf("%s reaches %s; the firewall must drop it", who, addr)
	}
}

func meshRules() FirewallRules {
	return FirewallRules{
		MeshInterface: "mcpmesh0",
		MeshAddrs:     []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a:115c:a1e0::2")},
		MeshPrefixes:  []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c:a1e0::/48")},
		LockdownPorts: []uint16{fwUpstreamPort},
	}
}

// TestFirewallClosesTheMeshAddressAndLockedPortsToTheLAN proves, from an
// attacker's namespace on the server's LAN, that the rules close what they
// claim and nothing else: before them the attacker reaches the proxy on the
// mesh address (routed over the LAN) and a shadow upstream bound to every
// address; after them neither, over IPv4 or IPv6, while the mesh peer still
// reaches the proxy through the mesh interface, the host itself still
// reaches the upstream, and unrelated services stay open.
func TestFirewallClosesTheMeshAddressAndLockedPortsToTheLAN(t *testing.T) {
	n := newFwNet(t)
	fw := NewFirewall(FirewallInNamespace(int(n.server.Handle)))
	t.Cleanup(func() {
		if err := fw.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	n.server.Listen(fmt.Sprintf("100.64.0.2:%d", fwProxyPort))
	n.server.Listen(fmt.Sprintf("[fd7a:115c:a1e0::2]:%d", fwProxyPort))
	n.server.Listen(fmt.Sprintf("[::]:%d", fwUpstreamPort)) // dual-stack, like a shadow server
	n.server.Listen(fmt.Sprintf("[::]:%d", fwOtherPort))

	proxy4 := fmt.Sprintf("100.64.0.2:%d", fwProxyPort)
	proxy6 := fmt.Sprintf("[fd7a:115c:a1e0::2]:%d", fwProxyPort)
	up4 := fmt.Sprintf("10.98.0.2:%d", fwUpstreamPort)
	up6 := fmt.Sprintf("[fd00:98::2]:%d", fwUpstreamPort)
	upMesh := fmt.Sprintf("100.64.0.2:%d", fwUpstreamPort)
	other := fmt.Sprintf("10.98.0.2:%d", fwOtherPort)

	// Without the firewall, the attack works: the test can fail.
	for _, a := range []string{proxy4, proxy6, up4, up6} {
		mustReach(t, n.attacker, "attacker (before the firewall)", a)
	}
	if t.Failed() {
		t.Fatal("the attack does not work even without the firewall; the test proves nothing")
	}

	r := meshRules()
	if err := fw.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := fw.Check(r); err != nil {
		t.Fatalf("Check right after Apply: %v", err)
	}
	for _, a := range []string{proxy4, proxy6, up4, up6, upMesh} {
		mustNotReach(t, n.attacker, "attacker", a)
	}
	mustReach(t, n.attacker, "attacker", other)
	mustReach(t, n.peer, "mesh peer", proxy4)
	mustNotReach(t, n.peer, "mesh peer", upMesh) // the upstream is for the proxy alone
	mustReach(t, n.server, "the server itself", fmt.Sprintf("127.0.0.1:%d", fwUpstreamPort))
	mustReach(t, n.server, "the server itself", up4) // local traffic arrives on lo

	// A packet from the LAN that claims a mesh source address is dropped:
	// the serving node names callers by that address.
	n.attacker.IP("addr", "add", "100.64.0.66/32", "dev", "lan0")
	before := dropped(t, fw, "from mesh prefix 100.64.0.0/10")
	if err := n.attacker.Dial(other, "100.64.0.66", blockedBound); err == nil {
		t.Error("a connection from a spoofed mesh source address succeeds")
	}
	if after := dropped(t, fw, "from mesh prefix 100.64.0.0/10"); after <= before {
		t.Errorf("the spoofed-source rule dropped %d packets before and %d after the spoofed dial", before, after)
	}
	if d := dropped(t, fw, fmt.Sprintf("lockdown tcp port %d", fwUpstreamPort)); d == 0 {
		t.Error("the lockdown rule counted no drops after the attacker's attempts")
	}
}

// TestFirewallRepairsDriftAndRemovesItself shows the life cycle: Check sees
// a rule deleted by hand, Apply repairs it (and replaces a stale table from
// an earlier run), and Remove takes everything away, twice without error.
func TestFirewallRepairsDriftAndRemovesItself(t *testing.T) {
	n := newFwNet(t)
	fw := NewFirewall(FirewallInNamespace(int(n.server.Handle)))
	n.server.Listen(fmt.Sprintf("[::]:%d", fwUpstreamPort))
	up4 := fmt.Sprintf("10.98.0.2:%d", fwUpstreamPort)

	// A stale table, as a crashed run with other ports would leave it.
	stale := meshRules()
	stale.LockdownPorts = []uint16{9001, 9002}
	if err := fw.Apply(stale); err != nil {
		t.Fatalf("Apply(stale): %v", err)
	}
	r := meshRules()
	if err := fw.Check(r); err == nil {
		t.Fatal("Check accepts a table with other lockdown ports")
	}
	if err := fw.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := fw.Check(r); err != nil {
		t.Fatalf("Check after Apply over a stale table: %v", err)
	}
	mustNotReach(t, n.attacker, "attacker", up4)

	// Someone deletes the lockdown rule by hand.
	c, err := nftables.New(nftables.WithNetNSFd(int(n.server.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: firewallChain, Table: tbl})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DelRule(rules[len(rules)-1]); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("delete a rule: %v", err)
	}
	mustReach(t, n.attacker, "attacker (rule deleted by hand)", up4)
	if err := fw.Check(r); err == nil || !strings.Contains(err.Error(), "rules") {
		t.Errorf("Check after a rule was deleted = %v, want a rule-count error", err)
	}
	if err := fw.Apply(r); err != nil {
		t.Fatalf("repair: %v", err)
	}
	if err := fw.Check(r); err != nil {
		t.Fatalf("Check after repair: %v", err)
	}
	mustNotReach(t, n.attacker, "attacker (after repair)", up4)

	if err := fw.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := c.ListTableOfFamily(FirewallTable, nftables.TableFamilyINet); err == nil {
		t.Error("table inet mcpmesh still exists after Remove")
	}
	if err := fw.Check(r); err == nil {
		t.Error("Check after Remove reports no drift")
	}
	mustReach(t, n.attacker, "attacker (after Remove)", up4)
	if err := fw.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// TestFirewallRefusesBadRulesAndKeepsTheTable shows that an invalid rule
// set is refused before anything is changed.
func TestFirewallRefusesBadRulesAndKeepsTheTable(t *testing.T) {
	bad := []FirewallRules{
		{MeshAddrs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}},
		{MeshInterface: "lo", MeshAddrs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}},
		{MeshInterface: "an-interface-name-too-long"},
		{MeshInterface: "mcpmesh0", MeshAddrs: []netip.Addr{{}}},
		{MeshInterface: "mcpmesh0", MeshPrefixes: []netip.Prefix{netip.MustParsePrefix("::ffff:100.64.0.0/106")}},
		{LockdownPorts: []uint16{0}},
	}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", r)
		}
	}
	n := newFwNet(t)
	fw := NewFirewall(FirewallInNamespace(int(n.server.Handle)))
	good := meshRules()
	if err := fw.Apply(good); err != nil {
		t.Fatal(err)
	}
	for _, r := range bad {
		if err := fw.Apply(r); err == nil {
			t.Errorf("Apply(%+v) = nil", r)
		}
	}
	if err := fw.Check(good); err != nil {
		t.Errorf("after refused Applies the table changed: %v", err)
	}
	if err := fw.Remove(); err != nil {
		t.Error(err)
	}
}

func dropped(t *testing.T, fw *Firewall, substr string) uint64 {
	t.Helper()
	d, err := fw.Dropped()
	if err != nil {
		t.Fatalf("Dropped: %v", err)
	}
	var n uint64
	found := false
	for comment, c := range d {
		if strings.Contains(comment, substr) {
			n += c
			found = true
		}
	}
	if !found {
		t.Fatalf("no rule comment contains %q: %v", substr, d)
	}
	return n
}

// TestFirewallRoutesNothingIntoTheMesh: a container or VM behind a TUN-mode
// node (here the attacker's namespace, its traffic routed by the server)
// must not reach the mesh through the node, where its packets would leave
// as the node's own. The server forwards, as a container host does; the
// mesh peer routes its answers back, so without the firewall the path
// works both ways.
func TestFirewallRoutesNothingIntoTheMesh(t *testing.T) {
	n := newFwNet(t)
	fw := NewFirewall(FirewallInNamespace(int(n.server.Handle)))
	t.Cleanup(func() {
		if err := fw.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	if out, err := n.server.Command("sysctl", "-w", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	n.peer.IP("route", "add", "10.98.0.0/24", "via", "100.64.0.2", "dev", "mesh0")
	peerSvc := fmt.Sprintf("100.64.0.1:%d", fwOtherPort)
	n.peer.Listen(peerSvc)
	n.server.Listen(fmt.Sprintf("100.64.0.2:%d", fwProxyPort))

	mustReach(t, n.attacker, "a container behind the server (before the firewall)", peerSvc)
	if t.Failed() {
		t.Fatal("the server does not forward even without the firewall; the test proves nothing")
	}

	r := meshRules()
	if err := fw.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := fw.Check(r); err != nil {
		t.Fatalf("Check right after Apply: %v", err)
	}
	mustNotReach(t, n.attacker, "a container behind the server", peerSvc)
	if d := dropped(t, fw, "nothing routed into mcpmesh0"); d == 0 {
		t.Error("the forward rule counted no drops")
	}
	// The mesh itself is untouched: the peer reaches the node's proxy.
	mustReach(t, n.peer, "mesh peer", fmt.Sprintf("100.64.0.2:%d", fwProxyPort))
}
