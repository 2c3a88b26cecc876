package netstack

import (
	"fmt"
	"net/netip"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// SetPeers makes the device's peer set equal to peers and reports whether
// anything changed, touching only the difference (see wgconfig.Peers.Set):
// a peer whose key, allowed IPs, endpoint and keepalive are unchanged keeps
// its session. An invalid peer set is an error and the previous state stays
// in force.
func (t *Tunnel) SetPeers(peers []tunnel.Peer) (changed bool, err error) {
	if t.isClosed() {
		return false, errClosed("set peers")
	}
	changed, err = t.peers.Set(peers)
	if err != nil {
		return false, fmt.Errorf("netstack: %w", err)
	}
	return changed, nil
}

// Peers reports what the device knows of each configured peer, sorted by
// key.
func (t *Tunnel) Peers() ([]tunnel.PeerStatus, error) {
	if t.isClosed() {
		return nil, errClosed("peers")
	}
	st, err := t.peers.Status()
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	return st, nil
}

// WhoIs returns the key of the peer whose allowed IPs hold addr, by longest
// prefix, as WireGuard itself routes; tunnel.ErrNoPeer when none does. It
// takes no lock, because the caller asks on every accepted connection.
func (t *Tunnel) WhoIs(addr netip.Addr) (tunnel.Key, error) {
	return t.peers.WhoIs(addr)
}

func (t *Tunnel) isClosed() bool {
	t.state.Lock()
	defer t.state.Unlock()
	return t.state.closed
}
