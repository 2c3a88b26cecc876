package netstack

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

func TestChangedPeerIsUpdatedInPlace(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	connectPair(t, a, b)

	wider := b.peer()
	wider.AllowedIPs = append(wider.AllowedIPs, netip.MustParsePrefix("10.9.0.0/16"))
	wider.PersistentKeepalive = 25 * time.Second
	if changed, err := a.SetPeers([]tunnel.Peer{wider}); err != nil || !changed {
		t.Fatalf("SetPeers(wider b) = %v, %v; want changed", changed, err)
	}
	if k, err := a.WhoIs(netip.MustParseAddr("10.9.1.1")); err != nil || k != b.pub {
		t.Errorf("WhoIs(10.9.1.1) = %v, %v; want b", k, err)
	}
	dev := deviceConfig(t, a)
	for _, want := range []string{"allowed_ip=10.9.0.0/16", "persistent_keepalive_interval=25"} {
		if !strings.Contains(dev, want) {
			t.Errorf("device config lacks %q:\n%s", want, dev)
		}
	}

	// Back to the narrow set: the extra prefix must leave the device too.
	if changed, err := a.SetPeers([]tunnel.Peer{b.peer()}); err != nil || !changed {
		t.Fatalf("SetPeers(narrow b) = %v, %v; want changed", changed, err)
	}
	if dev := deviceConfig(t, a); strings.Contains(dev, "10.9.0.0/16") || !strings.Contains(dev, "persistent_keepalive_interval=0") {
		t.Errorf("device config after narrowing still routes 10.9.0.0/16 or keeps keepalive:\n%s", dev)
	}
	if _, err := a.WhoIs(netip.MustParseAddr("10.9.1.1")); !errors.Is(err, tunnel.ErrNoPeer) {
		t.Errorf("WhoIs(10.9.1.1) after narrowing: err = %v, want ErrNoPeer", err)
	}
}

// deviceConfig is the device's UAPI view without the private key.
func deviceConfig(t *testing.T, n *node) string {
	t.Helper()
	get, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	return get[strings.Index(get, "\n")+1:]
}

// refusingBind fails to parse endpoints on port 9, so an IpcSet can be made
// to fail part way through.
type refusingBind struct{ conn.Bind }

func (b refusingBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if strings.HasSuffix(s, ":9") {
		return nil, errors.New("test: endpoint refused")
	}
	return b.Bind.ParseEndpoint(s)
}

func TestFailedApplyIsRepairedByTheNextSetPeers(t *testing.T) {
	a := newNode(t, 1, WithBind(refusingBind{conn.NewDefaultBind()}))
	b, c := newNode(t, 2), newNode(t, 3)
	connectPair(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, b.v4); err != nil {
		t.Fatal(err)
	}
	before := handshakeWith(t, a, b.pub)

	bad := c.peer()
	bad.Endpoint = netip.MustParseAddrPort("127.0.0.1:9")
	if changed, err := a.SetPeers([]tunnel.Peer{b.peer(), bad}); err == nil || changed {
		t.Fatalf("SetPeers(with refused endpoint) = %v, %v; want an error", changed, err)
	}
	if _, err := a.WhoIs(c.v4); !errors.Is(err, tunnel.ErrNoPeer) {
		t.Errorf("WhoIs(c) after failed apply: err = %v, want ErrNoPeer (previous state)", err)
	}

	// The same desired state as before the failure still has to clean up
	// what the failed IpcSet left behind.
	if changed, err := a.SetPeers([]tunnel.Peer{b.peer()}); err != nil || !changed {
		t.Fatalf("SetPeers(b) after failure = %v, %v; want changed", changed, err)
	}
	st, err := a.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].PublicKey != b.pub {
		t.Fatalf("peers after repair = %+v, want only b", st)
	}
	if dev := deviceConfig(t, a); strings.Contains(dev, c.v4.String()) {
		t.Errorf("device still routes c's address after repair:\n%s", dev)
	}
	if _, err := a.Ping(ctx, b.v4); err != nil {
		t.Fatal(err)
	}
	if after := handshakeWith(t, a, b.pub); !after.Equal(before) {
		t.Errorf("repair reset b's session: handshake %v -> %v", before, after)
	}
	if changed, err := a.SetPeers([]tunnel.Peer{b.peer()}); err != nil || changed {
		t.Errorf("SetPeers(b) once repaired = %v, %v; want unchanged", changed, err)
	}
}
