package node

import (
	"crypto/rand"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/netstack"
)

// TestExpiryFollowsTheWallClock: timers count the time a machine is awake,
// so a laptop that slept past its netmap's expiry has a timer still far
// off. The expiry is enforced on the wall clock wherever the map is used:
// here, the first caller the proxy asks about.
func TestExpiryFollowsTheWallClock(t *testing.T) {
	var priv, peerPriv tunnel.Key
	rand.Read(priv[:])
	rand.Read(peerPriv[:])
	peerPub, err := publicKey(peerPriv)
	if err != nil {
		t.Fatal(err)
	}
	self, peerAddr := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	tun, err := netstack.New(tunnel.Config{PrivateKey: priv, Addresses: []netip.Addr{self}})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	n := &Node{tun: tun, log: slog.New(slog.DiscardHandler)}
	held := &controlclient.Netmap{
		Version: 7,
		Expires: time.Now().Add(time.Hour), // the timer is an hour off
		Self:    api.Node{Name: "me", Addresses: []netip.Addr{self}},
		Peers: map[string]api.Peer{"peer": {
			Name: "peer", WireGuardKey: peerPub.String(), Addresses: []netip.Addr{peerAddr},
			Endpoint: netip.MustParseAddrPort("127.0.0.1:9"),
		}},
	}
	n.mu.Lock()
	if err := n.installLocked(held); err != nil {
		t.Fatal(err)
	}
	n.mu.Unlock()
	defer n.mu.expiry.Stop()
	if _, err := n.WhoIs(peerAddr); err != nil {
		t.Fatalf("the peer is unknown before expiry: %v", err)
	}

	// The machine sleeps past the expiry: the wall clock moves on, the
	// timer does not.
	n.mu.Lock()
	held.Expires = time.Now().Add(-time.Second)
	n.mu.Unlock()

	if _, err := n.WhoIs(peerAddr); err == nil {
		t.Fatal("the peer is still known after the wall clock passed the expiry")
	}
	if ps, err := tun.Peers(); err != nil || len(ps) != 0 {
		t.Fatalf("the tunnel still has peers %v (%v)", ps, err)
	}
	if p, _ := n.Policy(); p != nil {
		t.Fatal("a policy is still in force")
	}
}
