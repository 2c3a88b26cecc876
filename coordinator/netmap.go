package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
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
	pending   map[string]struct{}
	version   uint64 // newest version the pending set brings the node to
	resync    bool   // send a full map next
	recompute bool   // the node's whole view may have changed (policy, its services)
	closed    bool
	// view is the peer set last sent, kept under a policy so a change can
	// be sent as the difference; nil in an open mesh, where it is "all".
	view    map[string]struct{}
	catalog []api.Service
	bundle  *api.PolicyBundle
}

func (sub *subscriber) closeLocked() {
	if !sub.closed {
		sub.closed = true
		close(sub.done)
	}
}

func (sub *subscriber) wakeLocked(version uint64) {
	sub.version = version
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}

// applyLocked installs n as the current record at version and tells every
// subscriber. The caller holds s.mu and has already committed to the store.
func (s *Server) applyLocked(n *store.Node, version uint64, kind string) {
	cp := *n
	s.mu.nodes[n.Name] = &cp
	if version > s.mu.version {
		s.mu.version = version
	}
	if kind != store.EventServices && kind != store.EventEndpoint {
		s.mu.vis.nodeChanged(&cp)
	}
	for _, sub := range s.mu.subs {
		if sub.closed {
			continue
		}
		if sub.node == n.Name && cp.Revoked() {
			sub.closeLocked()
			continue
		}
		if s.unseenLocked(sub, &cp) {
			continue
		}
		if sub.node == n.Name && kind == store.EventServices {
			sub.recompute = true
		}
		if len(sub.pending) >= maxPending {
			sub.resync = true
			clear(sub.pending)
		} else if !sub.resync {
			sub.pending[n.Name] = struct{}{}
		}
		sub.wakeLocked(s.mu.version)
	}
}

// unseenLocked reports whether a change to n gives sub's node nothing to
// learn, so its stream need not wake: under a policy, n is neither in the
// view last sent to it nor visible to it now. The node's version then stays
// behind the coordinator's, which is fine: its next delta starts from the
// version it holds. Without this, one node joining sent every node of the
// mesh a signed, empty delta (10,000 Ed25519 signatures and writes at
// 10,000 nodes, about a second before the join reached its one peer).
// Revocations still reach every node: they carry revoked serials.
func (s *Server) unseenLocked(sub *subscriber, n *store.Node) bool {
	if sub.view == nil || sub.node == n.Name || n.Revoked() {
		return false // an open mesh, the node itself, or a revocation
	}
	if _, held := sub.view[n.Name]; held {
		return false
	}
	self := s.mu.nodes[sub.node]
	return self != nil && !s.mu.vis.visible(self, n)
}

// applyPolicyLocked installs a new policy and makes every stream recompute
// its node's view.
func (s *Server) applyPolicyLocked(pol *policy.Policy, policyVersion, version uint64) {
	wasOpen := s.mu.vis.pol == nil
	s.mu.vis.pol, s.mu.vis.polVer = pol, policyVersion
	s.mu.vis.rebuild(s.mu.nodes, s.servicesLocked())
	s.warnIgnoredTagsLocked()
	if version > s.mu.version {
		s.mu.version = version
	}
	for _, sub := range s.mu.subs {
		if sub.closed {
			continue
		}
		if wasOpen {
			sub.resync = true // no view was tracked; send the new one whole
		}
		sub.recompute = true
		sub.wakeLocked(s.mu.version)
	}
}

// warnIgnoredTagsLocked logs every service tag the policy in force does
// not let its node use, which visibility therefore ignores.
func (s *Server) warnIgnoredTagsLocked() {
	if s.mu.vis.pol == nil {
		return
	}
	for _, why := range s.ignoredTagsLocked() {
		s.log.Warn("service tag ignored", "why", why, "policy", s.mu.vis.polVer)
	}
}

// servicesLocked lists the published services known to the visibility index
// plus those of nodes that have none yet (used to rebuild it).
func (s *Server) servicesLocked() []store.Service {
	out := make([]store.Service, 0, len(s.mu.services))
	for _, svc := range s.mu.services {
		out = append(out, svc)
	}
	return out
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

// fullMapLocked builds the complete map for sub's node at the current
// version and records what it sent.
func (s *Server) fullMapLocked(sub *subscriber, self *store.Node, revoked []string) (*api.NetmapMessage, error) {
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
	v := s.mu.vis
	if v.pol == nil {
		sub.view = nil
		for _, n := range s.mu.nodes {
			if v.visible(self, n) {
				m.Peers = append(m.Peers, apiPeer(n))
			}
		}
	} else {
		sub.view = v.view(self)
		for name := range sub.view {
			m.Peers = append(m.Peers, apiPeer(s.mu.nodes[name]))
		}
	}
	slices.SortFunc(m.Peers, func(a, b api.Peer) int { return strings.Compare(a.Name, b.Name) })
	sub.catalog = v.catalog(self)
	m.Catalog = &api.Catalog{Services: sub.catalog}
	b, err := v.bundle(self.Name)
	if err != nil {
		return nil, err
	}
	sub.bundle, m.Policy = b, b
	sub.recompute = false
	return m, nil
}

// deltaLocked builds the delta for sub's node covering the changed nodes,
// or the difference of its whole view when sub.recompute is set.
func (s *Server) deltaLocked(sub *subscriber, self *store.Node, from, to uint64, changed []string, revoked []string) (*api.NetmapMessage, error) {
	now := s.now()
	m := &api.NetmapMessage{
		Version:        to,
		From:           from,
		Node:           self.Name,
		Issued:         now,
		Expires:        now.Add(s.netmapTTL),
		RevokedSerials: revoked,
	}
	v := s.mu.vis
	slices.Sort(changed)
	if slices.Contains(changed, self.Name) {
		sn := apiNode(self, true)
		m.Self = &sn
	}
	if sub.recompute && v.pol != nil {
		next := v.view(self)
		for name := range next {
			_, had := sub.view[name]
			if !had || slices.Contains(changed, name) {
				m.Peers = append(m.Peers, apiPeer(s.mu.nodes[name]))
			}
		}
		for name := range sub.view {
			if _, keep := next[name]; !keep {
				m.Removed = append(m.Removed, name)
			}
		}
		sub.view = next
	} else {
		for _, name := range changed {
			if name == self.Name {
				continue
			}
			n, ok := s.mu.nodes[name]
			_, had := sub.view[name]
			switch {
			case ok && v.visible(self, n):
				m.Peers = append(m.Peers, apiPeer(n))
				if sub.view != nil {
					sub.view[name] = struct{}{}
				}
			case sub.view == nil || had:
				m.Removed = append(m.Removed, name)
				delete(sub.view, name)
			}
		}
	}
	slices.SortFunc(m.Peers, func(a, b api.Peer) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(m.Removed)
	if c := v.catalog(self); !sameCatalog(c, sub.catalog) {
		sub.catalog = c
		m.Catalog = &api.Catalog{Services: c}
	}
	if sub.recompute || m.Self != nil {
		b, err := v.bundle(self.Name)
		if err != nil {
			return nil, err
		}
		if !sameBundle(b, sub.bundle) {
			sub.bundle, m.Policy = b, b
		}
	}
	sub.recompute = false
	return m, nil
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
	if s.mu.shuttingDown {
		s.mu.Unlock()
		httpError(w, http.StatusServiceUnavailable, "coordinator is shutting down; reconnect shortly")
		return
	}
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
	// A delta catch-up is possible when the log reaches back to the node's
	// version, memory holds nothing newer than the log read above, and no
	// change in between could have reshaped the node's whole view (a
	// policy, or its own services).
	var changed map[string]struct{}
	if canDelta && len(events) <= maxPending && s.mu.version == storeVersion {
		changed = map[string]struct{}{}
		for _, e := range events {
			if e.Kind == store.EventPolicy || e.Node == c.name {
				changed = nil
				break
			}
			changed[e.Node] = struct{}{}
		}
	}
	var first *api.NetmapMessage
	var ferr error
	if changed != nil {
		// The node held the right view at its version; only the changed
		// nodes can differ. Which of them it saw then is not known, so
		// each changed node not visible now is sent as removed (a no-op
		// for a node that never had it): a revocation or a lost grant
		// while the node was away must not leave it a peer.
		if s.mu.vis.pol != nil {
			sub.view = s.mu.vis.view(self)
			for name := range changed {
				sub.view[name] = struct{}{}
			}
		}
		// Its catalog may have changed with other nodes' services, so it
		// is compared against nothing and sent; its own bundle cannot have.
		sub.bundle, ferr = s.mu.vis.bundle(self.Name)
		if ferr == nil {
			first, ferr = s.deltaLocked(sub, self, have, s.mu.version, keys(changed), revoked)
		}
	} else {
		first, ferr = s.fullMapLocked(sub, self, revoked)
	}
	if ferr != nil {
		s.mu.Unlock()
		s.unsubscribe(sub)
		httpError(w, http.StatusInternalServerError, ferr.Error())
		return
	}
	sent := first.Version
	// Registered under the lock that shutdownStreams takes before it
	// waits, so no stream starts while the coordinator waits for them.
	s.streams.Add(1)
	s.mu.Unlock()
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
	// A quiet stream still renews the map's expiry at half its life, so a
	// node that is connected never reaches the expiry meant for one that
	// cannot hear from the coordinator (DESIGN rule 5).
	refresh := time.NewTimer(s.netmapTTL / 2)
	defer refresh.Stop()
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
		case <-refresh.C:
			m, err := s.refreshMessage(sub, sent)
			if err != nil {
				s.log.Error("netmap refresh", "node", c.name, "err", err)
				return
			}
			if err := s.writeSigned(w, fl, m); err != nil {
				return
			}
			refresh.Reset(s.netmapTTL / 2)
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
			refresh.Reset(s.netmapTTL / 2)
		}
	}
}

// refreshMessage is a delta that changes nothing but the expiry of the map
// sub's node holds at version sent.
func (s *Server) refreshMessage(sub *subscriber, sent uint64) (*api.NetmapMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	self := s.mu.nodes[sub.node]
	if sub.closed || self == nil || self.Revoked() {
		return nil, errors.New("stream closed")
	}
	now := s.now()
	return &api.NetmapMessage{Version: sent, From: sent, Node: self.Name, Issued: now, Expires: now.Add(s.netmapTTL)}, nil
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
		return s.fullMapLocked(sub, self, revoked)
	}
	if (len(sub.pending) == 0 && !sub.recompute) || sub.version <= sent {
		return nil, nil
	}
	changed := keys(sub.pending)
	clear(sub.pending)
	return s.deltaLocked(sub, self, sent, sub.version, changed, revoked)
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
