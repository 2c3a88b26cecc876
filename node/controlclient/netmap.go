package controlclient

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// Errors from applying a netmap message. A node that gets ErrGap or ErrStale
// drops the stream and reconnects, asking for the deltas since its version.
var (
	ErrStale     = errors.New("controlclient: netmap is older than the one held")
	ErrGap       = errors.New("controlclient: delta does not apply to the version held")
	ErrRecipient = errors.New("controlclient: netmap is addressed to another node")
)

// Netmap is the node's verified view of the mesh, built from a full map and
// the deltas after it. It is a value the node persists, so a restart while
// the coordinator is down brings the last view back.
type Netmap struct {
	Version        uint64              `json:"version"`
	Expires        time.Time           `json:"expires"`
	Self           api.Node            `json:"self"`
	Peers          map[string]api.Peer `json:"peers"`
	RevokedSerials []string            `json:"revokedSerials,omitempty"`
	// Catalog is the services this node may call.
	Catalog []api.Service `json:"catalog,omitempty"`
	// Policy holds the rules for the services this node hosts.
	Policy *api.PolicyBundle `json:"policy,omitempty"`
}

// Clone returns a deep-enough copy that the caller may keep while the
// original goes on changing.
func (n *Netmap) Clone() *Netmap {
	cp := *n
	cp.Peers = maps.Clone(n.Peers)
	cp.RevokedSerials = slices.Clone(n.RevokedSerials)
	cp.Catalog = slices.Clone(n.Catalog)
	return &cp
}

// SortedPeers returns the peers ordered by name.
func (n *Netmap) SortedPeers() []api.Peer {
	out := make([]api.Peer, 0, len(n.Peers))
	for _, name := range slices.Sorted(maps.Keys(n.Peers)) {
		out = append(out, n.Peers[name])
	}
	return out
}

// Apply checks m against what is held and, only if every check passes,
// returns the new view; n itself is never modified. It enforces DESIGN rule
// 4: a map for another node, an older map, or a delta whose base is not the
// held version is refused.
func (n *Netmap) Apply(self string, m *api.NetmapMessage) (*Netmap, error) {
	if m.Node != self {
		return nil, fmt.Errorf("%w: for %q, this node is %q", ErrRecipient, m.Node, self)
	}
	var cur uint64
	if n != nil {
		cur = n.Version
	}
	if m.Full {
		// A full map of the version held is fine (a resync after restart);
		// anything older would roll the node back.
		if m.Version < cur {
			return nil, fmt.Errorf("%w: full map v%d, holding v%d", ErrStale, m.Version, cur)
		}
		if m.Self == nil {
			return nil, fmt.Errorf("controlclient: full map v%d lacks the node's own record", m.Version)
		}
		next := &Netmap{Version: m.Version, Expires: m.Expires, Self: *m.Self, Peers: make(map[string]api.Peer, len(m.Peers)), RevokedSerials: slices.Clone(m.RevokedSerials)}
		for _, p := range m.Peers {
			next.Peers[p.Name] = p
		}
		if m.Catalog != nil {
			next.Catalog = m.Catalog.Services
		}
		next.Policy = m.Policy
		return next, nil
	}
	if n == nil {
		return nil, fmt.Errorf("%w: delta v%d→v%d but no map is held", ErrGap, m.From, m.Version)
	}
	if m.From != cur {
		return nil, fmt.Errorf("%w: delta v%d→v%d, holding v%d", ErrGap, m.From, m.Version, cur)
	}
	if m.Version < m.From {
		return nil, fmt.Errorf("%w: delta goes back from v%d to v%d", ErrStale, m.From, m.Version)
	}
	next := n.Clone()
	next.Version = m.Version
	if m.Expires.After(next.Expires) {
		next.Expires = m.Expires
	}
	if m.Self != nil {
		next.Self = *m.Self
	}
	for _, name := range m.Removed {
		delete(next.Peers, name)
	}
	for _, p := range m.Peers {
		next.Peers[p.Name] = p
	}
	for _, s := range m.RevokedSerials {
		if !slices.Contains(next.RevokedSerials, s) {
			next.RevokedSerials = append(next.RevokedSerials, s)
		}
	}
	if m.Catalog != nil {
		next.Catalog = m.Catalog.Services
	}
	if m.Policy != nil {
		next.Policy = m.Policy
	}
	return next, nil
}
