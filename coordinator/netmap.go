package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
)

// maxPending is how many changed nodes a subscriber may fall behind by
// before it is sent a full map instead of a growing delta.
const maxPending = 4096

// subscriber is one node's open netmap stream. The coordinator records which
// nodes changed; the stream's goroutine turns that into one signed delta for
// its node. Work per change is O(1) per subscriber.
type subscriber struct {
	node   string
	notify chan struct{} // capacity 1: "pending has something"
	done   chan struct{} // closed to end the stream (revocation, replacement)
	// Fields below are guarded by Server.mu.
	pending map[string]struct{}
	version uint64 // newest version the pending set brings the node to
	resync  bool   // send a full map next
	closed  bool
}

func (sub *subscriber) closeLocked() {
	if !sub.closed {
		sub.closed = true
		close(sub.done)
	}
}

// applyLocked installs n as the current record at version and tells every
// subscriber. The caller holds s.mu and has already committed to the store.
func (s *Server) applyLocked(n *store.Node, version uint64) {
	cp := *n
	s.mu.nodes[n.Name] = &cp
	if version > s.mu.version {
		s.mu.version = version
	}
	for _, sub := range s.mu.subs {
		if sub.closed {
			continue
		}
		if sub.node == n.Name && cp.Revoked() {
			sub.closeLocked()
			continue
		}
		if len(sub.pending) >= maxPending {
			sub.resync = true
			clear(sub.pending)
		} else if !sub.resync {
			sub.pending[n.Name] = struct{}{}
		}
		sub.version = s.mu.version
		select {
		case sub.notify <- struct{}{}:
		default:
		}
	}
}

// visibleLocked reports whether node a should have b as a WireGuard peer.
// Until policy lands every enrolled node sees every other; revoked nodes
// are seen by none.
func (s *Server) visibleLocked(a, b *store.Node) bool {
	return a.Name != b.Name && !b.Revoked() && !a.Revoked()
}

func apiNode(n *store.Node, online bool) api.Node {
	return api.Node{
		Name:         n.Name,
		ID:           n.ID,
		WireGuardKey: n.WireGuardKey,
		Addresses:    []netip.Addr{n.IPv4, n.IPv6},
		Endpoint:     n.Endpoint,
		Tags:         n.Tags,
		Created:      n.Created,
		LastSeen:     n.LastSeen,
		Online:       online,
		Revoked:      n.Revoked(),
	}
}

func apiPeer(n *store.Node) api.Peer {
	return api.Peer{
		Name:         n.Name,
		ID:           n.ID,
		WireGuardKey: n.WireGuardKey,
		Addresses:    []netip.Addr{n.IPv4, n.IPv6},
		Endpoint:     n.Endpoint,
		Tags:         n.Tags,
	}
}

// fullMapLocked builds the complete map for node at the current version.
func (s *Server) fullMapLocked(self *store.Node, revoked []string) *api.NetmapMessage {
	now := s.now()
	m := &api.NetmapMessage{
		Version:        s.mu.version,
		Full:           true,
		Node:           self.Name,
		Issued:         now,
		Expires:        now.Add(s.netmapTTL),
		RevokedSerials: revoked,
	}
	sn := apiNode(self, true)
	m.Self = &sn
	for _, n := range s.mu.nodes {
		if s.visibleLocked(self, n) {
			m.Peers = append(m.Peers, apiPeer(n))
		}
	}
	slices.SortFunc(m.Peers, func(a, b api.Peer) int { return compareStrings(a.Name, b.Name) })
	return m
}

// deltaLocked builds the delta for self covering the changed nodes.
func (s *Server) deltaLocked(self *store.Node, from, to uint64, changed []string, revoked []string) *api.NetmapMessage {
	now := s.now()
	m := &api.NetmapMessage{
		Version:        to,
		From:           from,
		Node:           self.Name,
		Issued:         now,
		Expires:        now.Add(s.netmapTTL),
		RevokedSerials: revoked,
	}
	slices.Sort(changed)
	for _, name := range changed {
		n, ok := s.mu.nodes[name]
		switch {
		case name == self.Name:
			sn := apiNode(self, true)
			m.Self = &sn
		case ok && s.visibleLocked(self, n):
			m.Peers = append(m.Peers, apiPeer(n))
		default:
			m.Removed = append(m.Removed, name)
		}
	}
	return m
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// handleNetmap serves GET /v1/netmap?version=V: the long-lived stream.
func (s *Server) handleNetmap(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	have, err := parseVersion(r.URL.Query().Get("version"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if cv := r.URL.Query().Get("capver"); cv != "" && cv != strconv.Itoa(api.CapabilityVersion) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("node speaks capability version %s, coordinator speaks %d", cv, api.CapabilityVersion))
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ctx := r.Context()

	// Catch-up: the events since the node's version, read before the
	// subscription so the two can be stitched together under the lock.
	storeVersion, err := s.store.Version(ctx)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var events []store.Event
	canDelta := false
	if have > 0 && have <= storeVersion {
		events, canDelta, err = s.store.EventsSince(ctx, have)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	revoked, err := s.store.RevokedSerials(ctx, s.now())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}

	sub := &subscriber{
		node:    c.name,
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: make(map[string]struct{}),
	}
	s.mu.Lock()
	self := s.mu.nodes[c.name]
	if self == nil || self.Revoked() {
		s.mu.Unlock()
		httpError(w, http.StatusForbidden, fmt.Sprintf("node %q has been revoked", c.name))
		return
	}
	if old := s.mu.subs[c.name]; old != nil {
		old.closeLocked() // a node has one stream; the newest wins
	}
	s.mu.subs[c.name] = sub
	// Changes committed between the store reads above and now are already
	// in memory; they are covered because the first message is computed
	// against the in-memory state at s.mu.version.
	var first *api.NetmapMessage
	if canDelta && len(events) <= maxPending {
		changed := map[string]struct{}{}
		for _, e := range events {
			changed[e.Node] = struct{}{}
		}
		// Include any change after storeVersion that only memory knows of
		// (they are already applied to s.mu.nodes; a full set of names is
		// not tracked, so fall back to a full map in that rare case).
		if s.mu.version != storeVersion {
			first = s.fullMapLocked(self, revoked)
		} else {
			first = s.deltaLocked(self, have, s.mu.version, keys(changed), revoked)
		}
	} else {
		first = s.fullMapLocked(self, revoked)
	}
	sent := first.Version
	s.mu.Unlock()
	s.streams.Add(1)
	defer s.streams.Done()
	defer s.unsubscribe(sub)

	s.touch(c.name)
	defer s.touch(c.name)
	s.log.Info("netmap stream open", "node", c.name, "have", have, "version", first.Version, "full", first.Full)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := s.writeSigned(w, fl, first); err != nil {
		return
	}

	// The stream ends when the SVID that opened it expires, so a renewed
	// certificate (or a refused renewal) takes effect on the next connect.
	expiry := time.NewTimer(time.Until(c.leaf.NotAfter))
	defer expiry.Stop()
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-sub.done:
			return
		case <-expiry.C:
			return
		case <-hb.C:
			if _, err := w.Write([]byte("\n")); err != nil {
				return
			}
			fl.Flush()
		case <-sub.notify:
			m, err := s.nextMessage(ctx, sub, sent)
			if err != nil {
				s.log.Error("netmap message", "node", c.name, "err", err)
				return
			}
			if m == nil {
				continue
			}
			if err := s.writeSigned(w, fl, m); err != nil {
				return
			}
			sent = m.Version
		}
	}
}

// nextMessage takes the subscriber's pending changes and builds its delta
// (or a full map when it fell too far behind).
func (s *Server) nextMessage(ctx context.Context, sub *subscriber, sent uint64) (*api.NetmapMessage, error) {
	var revoked []string
	s.mu.Lock()
	needRevoked := false
	for name := range sub.pending {
		if n := s.mu.nodes[name]; n != nil && n.Revoked() {
			needRevoked = true
		}
	}
	needRevoked = needRevoked || sub.resync
	s.mu.Unlock()
	if needRevoked {
		var err error
		if revoked, err = s.store.RevokedSerials(ctx, s.now()); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	self := s.mu.nodes[sub.node]
	if sub.closed || self == nil || self.Revoked() {
		return nil, errors.New("stream closed")
	}
	if sub.resync {
		sub.resync = false
		clear(sub.pending)
		return s.fullMapLocked(self, revoked), nil
	}
	if len(sub.pending) == 0 || sub.version <= sent {
		return nil, nil
	}
	changed := keys(sub.pending)
	clear(sub.pending)
	return s.deltaLocked(self, sent, sub.version, changed, revoked), nil
}

func (s *Server) writeSigned(w http.ResponseWriter, fl http.Flusher, m *api.NetmapMessage) error {
	line, err := api.Sign(s.netmapKey, m)
	if err != nil {
		return err
	}
	if _, err := w.Write(line); err != nil {
		return err
	}
	fl.Flush()
	return nil
}

func (s *Server) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub.closeLocked()
	if s.mu.subs[sub.node] == sub {
		delete(s.mu.subs, sub.node)
	}
}

// touch records that a node was seen now, in memory and in the store.
func (s *Server) touch(name string) {
	now := s.now()
	s.mu.Lock()
	if n := s.mu.nodes[name]; n != nil {
		cp := *n
		cp.LastSeen = now
		s.mu.nodes[name] = &cp
	}
	s.mu.Unlock()
	if err := s.store.TouchLastSeen(context.Background(), name, now); err != nil {
		s.log.Warn("touch last seen", "node", name, "err", err)
	}
}

func parseVersion(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("version %q is not a number", s)
	}
	return v, nil
}

func keys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
