package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/netstack"
)

// TestNetmapExpiryCutsOffPeersUntilTheCoordinatorReturns: a node that
// cannot hear from the coordinator for longer than the netmap's lifetime
// stops trusting the peers it knew (any of them may have been revoked
// meanwhile), and a connected node on a quiet mesh never gets there.
func TestNetmapExpiryCutsOffPeersUntilTheCoordinatorReturns(t *testing.T) {
	const ttl = 4 * time.Second
	m := meshtest.New(t, meshtest.Options{NetmapTTL: ttl})
	a, b := m.AddNode("node-a"), m.AddNode("node-b")
	publish(t, a, "echo")
	applyPolicy(t, m, `{"grants": [{"src": ["node:node-b"], "dst": ["svc:echo"], "tools": ["*"]}]}`)
	waitFor(t, "node-a's rules", func() bool { p, _ := a.Policy(); return p != nil })
	m.WaitPeers(a, "node-b")
	m.WaitPeers(b, "node-a")
	serveEcho(t, a)
	mustEcho(t, b, a)

	// A quiet mesh with its coordinator up outlives the lifetime: the
	// streams renew the expiry without any change to carry.
	time.Sleep(ttl + ttl/2)
	mustEcho(t, b, a)
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.NetmapExpired || time.Until(st.NetmapExpires) <= 0 {
		t.Fatalf("a connected node's netmap expired on a quiet mesh: %+v", st)
	}

	// The attacker: whoever holds node-b's WireGuard key (node-b stopped,
	// say, and its key taken), speaking to node-a from outside any node.
	peerA := b.Netmap().Peers["node-a"]
	bAddrs := b.Addresses()
	m.StopNode("node-b")
	keyText, err := os.ReadFile(filepath.Join(m.NodeDir("node-b"), "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	bKey, err := tunnel.ParseKey(strings.TrimSpace(string(keyText)))
	if err != nil {
		t.Fatal(err)
	}
	aKey, err := tunnel.ParseKey(peerA.WireGuardKey)
	if err != nil {
		t.Fatal(err)
	}
	thief, err := netstack.New(tunnel.Config{PrivateKey: bKey, Addresses: bAddrs})
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()
	endpoint := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Tunnel().ListenPort())
	var allowed []netip.Prefix
	for _, ad := range peerA.Addresses {
		allowed = append(allowed, netipPrefix(ad))
	}
	if _, err := thief.SetPeers([]tunnel.Peer{{PublicKey: aKey, Endpoint: endpoint, AllowedIPs: allowed, PersistentKeepalive: time.Second}}); err != nil {
		t.Fatal(err)
	}
	thiefEcho := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := thief.DialContext(ctx, "tcp", net.JoinHostPort(peerA.Addresses[0].String(), strconv.Itoa(echoPort)))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if buf[0] != 'x' {
			return errors.New("echo mismatch")
		}
		return nil
	}
	// Before: node-b is a peer of node-a, so its key reaches node-a (the
	// first handshake may need WireGuard's 5 s retry).
	if err := thiefEcho(15 * time.Second); err != nil {
		t.Fatalf("node-b's key does not reach node-a while node-a trusts it: %v", err)
	}

	// The coordinator goes away; node-a goes on until its map expires...
	m.StopCoordinator()
	if err := thiefEcho(5 * time.Second); err != nil {
		t.Fatalf("node-a dropped its peer before its netmap expired: %v", err)
	}
	waitFor(t, "node-a's netmap to expire", func() bool {
		st, err := a.Status()
		return err == nil && st.NetmapExpired
	})
	st, err = a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 0 || len(st.Catalog) != 0 || st.PolicyVersion != 0 {
		t.Errorf("an expired node still shows peers %v, catalog %v, policy v%d", st.Peers, st.Catalog, st.PolicyVersion)
	}
	if p, _ := a.Policy(); p != nil {
		t.Error("an expired node still enforces its last policy instead of denying every call")
	}
	// ...and then no longer answers the key, however it asks.
	for i := range 3 {
		if err := thiefEcho(2 * time.Second); err == nil {
			t.Fatalf("attempt %d: node-b's key still reaches node-a after node-a's netmap expired", i)
		}
	}
	if _, err := a.Ping(context.Background(), "node-b"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("ping from an expired node: %v, want an error that says the netmap expired", err)
	}

	// The coordinator returns: node-a takes a fresh map and node-b, which
	// was never revoked, is its peer again.
	m.StartCoordinator()
	// The node reconnects with backoff (full jitter, up to 30 s).
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := a.Status()
		p, _ := a.Policy()
		if err == nil && !st.NetmapExpired && len(st.Peers) == 1 && p != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-a took no fresh netmap after the coordinator returned: %+v, policy %v", st, p != nil)
		}
	}
	if err := thiefEcho(15 * time.Second); err != nil {
		t.Fatalf("node-b's key does not reach node-a after the coordinator returned: %v", err)
	}
}
