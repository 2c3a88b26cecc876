package coordinator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// visibility decides who sees whom (DESIGN rule 3): under a policy, node A
// has node B as a WireGuard peer only if A may call a service B hosts or B
// may call a service A hosts. It keeps, per service, the set of nodes that
// may reach it, so a join or a visibility question costs O(services of the
// two nodes), not a scan of the policy. Guarded by Server.mu.
//
// Before the first policy is applied there is none (pol == nil): the mesh
// is open at the network layer, every node sees every node, and every MCP
// call is denied because no grant exists.
type visibility struct {
	pol     *policy.Policy
	polVer  uint64
	svc     map[string]store.Service       // published services of unrevoked nodes, with their effective tags
	svcsOn  map[string][]string            // node → names of the services it hosts
	callers map[string]map[string]struct{} // service → nodes that may reach it
}

func newVisibility() *visibility {
	return &visibility{svc: map[string]store.Service{}, svcsOn: map[string][]string{}, callers: map[string]map[string]struct{}{}}
}

// identityOf is a node as the policy sees it (tags without "tag:").
func identityOf(n *store.Node) policy.Identity {
	id := policy.Identity{Name: n.Name, ID: n.ID}
	for _, t := range n.Tags {
		id.Tags = append(id.Tags, strings.TrimPrefix(t, "tag:"))
	}
	return id
}

func serviceOf(s store.Service) policy.Service {
	ps := policy.Service{Name: s.Name}
	for _, t := range s.Tags {
		ps.Tags = append(ps.Tags, strings.TrimPrefix(t, "tag:"))
	}
	return ps
}

// rebuild recomputes everything from the registry: on start and on every
// policy change. It costs nodes × services reachability checks.
func (v *visibility) rebuild(nodes map[string]*store.Node, services []store.Service) {
	v.svc, v.svcsOn, v.callers = map[string]store.Service{}, map[string][]string{}, map[string]map[string]struct{}{}
	for _, s := range services {
		if n := nodes[s.Node]; n != nil && !n.Revoked() {
			v.addService(s, nodes)
		}
	}
}

// effective is s as the policy sees it: without the tags its node may not
// use under the current policy (tagOwners). A node names its services' tags
// itself, and a tag decides which grants reach a service, so a tag counts
// only while the policy lets the node use it; a later policy that drops the
// ownership takes the tag away without the node publishing again. In an
// open mesh (no policy) every tag stands: no call is allowed anyway.
func (v *visibility) effective(s store.Service, nodes map[string]*store.Node) store.Service {
	if v.pol == nil || len(s.Tags) == 0 {
		return s
	}
	tags := make([]string, 0, len(s.Tags))
	if n := nodes[s.Node]; n != nil {
		id := identityOf(n)
		for _, t := range s.Tags {
			if v.pol.MayUseTag(id, strings.TrimPrefix(t, "tag:")) {
				tags = append(tags, t)
			}
		}
	}
	s.Tags = tags
	return s
}

// addService indexes s with the tags its node may use (effective).
func (v *visibility) addService(s store.Service, nodes map[string]*store.Node) {
	s = v.effective(s, nodes)
	v.svc[s.Name] = s
	v.svcsOn[s.Node] = append(v.svcsOn[s.Node], s.Name)
	slices.Sort(v.svcsOn[s.Node])
	set := map[string]struct{}{}
	if v.pol != nil {
		ps := serviceOf(s)
		for _, n := range nodes {
			if !n.Revoked() && v.pol.CanReach(identityOf(n), ps) {
				set[n.Name] = struct{}{}
			}
		}
	}
	v.callers[s.Name] = set
}

// nodeChanged updates the caller sets for a node that joined, changed or
// was revoked.
func (v *visibility) nodeChanged(n *store.Node) {
	if n.Revoked() {
		for _, name := range v.svcsOn[n.Name] {
			delete(v.svc, name)
			delete(v.callers, name)
		}
		delete(v.svcsOn, n.Name)
	}
	if v.pol == nil {
		return
	}
	id := identityOf(n)
	for name, s := range v.svc {
		if !n.Revoked() && v.pol.CanReach(id, serviceOf(s)) {
			v.callers[name][n.Name] = struct{}{}
		} else {
			delete(v.callers[name], n.Name)
		}
	}
}

// setServices replaces the services a node hosts.
func (v *visibility) setServices(node string, svcs []store.Service, nodes map[string]*store.Node) {
	for _, name := range v.svcsOn[node] {
		delete(v.svc, name)
		delete(v.callers, name)
	}
	delete(v.svcsOn, node)
	if n := nodes[node]; n == nil || n.Revoked() {
		return
	}
	for _, s := range svcs {
		v.addService(s, nodes)
	}
}

// canCall reports whether node may reach service svc under the policy.
func (v *visibility) canCall(node, svc string) bool {
	_, ok := v.callers[svc][node]
	return ok
}

// visible reports whether a should have b as a WireGuard peer.
func (v *visibility) visible(a, b *store.Node) bool {
	if a.Name == b.Name || a.Revoked() || b.Revoked() {
		return false
	}
	if v.pol == nil {
		return true
	}
	for _, s := range v.svcsOn[b.Name] {
		if v.canCall(a.Name, s) {
			return true
		}
	}
	for _, s := range v.svcsOn[a.Name] {
		if v.canCall(b.Name, s) {
			return true
		}
	}
	return false
}

// view is the set of peers r has under the policy (policy mode only).
func (v *visibility) view(r *store.Node) map[string]struct{} {
	out := map[string]struct{}{}
	if r.Revoked() {
		return out
	}
	for name, s := range v.svc {
		if s.Node != r.Name && v.canCall(r.Name, name) {
			out[s.Node] = struct{}{}
		}
	}
	for _, name := range v.svcsOn[r.Name] {
		for c := range v.callers[name] {
			if c != r.Name {
				out[c] = struct{}{}
			}
		}
	}
	return out
}

// catalog lists the services r may call, sorted by name.
func (v *visibility) catalog(r *store.Node) []api.Service {
	out := []api.Service{}
	if v.pol == nil || r.Revoked() {
		return out
	}
	for name, s := range v.svc {
		if v.canCall(r.Name, name) {
			out = append(out, api.Service{Name: s.Name, Node: s.Node, Tags: s.Tags})
		}
	}
	slices.SortFunc(out, func(a, b api.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// bundle is the policy r's proxy enforces: the rules for the services it
// hosts, and nothing of the rest of the file.
func (v *visibility) bundle(r string) (*api.PolicyBundle, error) {
	names := v.svcsOn[r]
	b := &api.PolicyBundle{Version: v.polVer, Services: slices.Clone(names)}
	if b.Services == nil {
		b.Services = []string{}
	}
	if v.pol == nil || len(names) == 0 {
		return b, nil
	}
	svcs := make([]policy.Service, 0, len(names))
	for _, name := range names {
		svcs = append(svcs, serviceOf(v.svc[name]))
	}
	doc, err := v.pol.ForServices(svcs)
	if err != nil {
		return nil, fmt.Errorf("coordinator: cut policy v%d for %s: %w", v.polVer, r, err)
	}
	b.Document = doc
	return b, nil
}

func sameBundle(a, b *api.PolicyBundle) bool {
	return a != nil && b != nil && a.Version == b.Version && slices.Equal(a.Services, b.Services) && string(a.Document) == string(b.Document)
}

func sameCatalog(a, b []api.Service) bool {
	return slices.EqualFunc(a, b, func(x, y api.Service) bool {
		return x.Name == y.Name && x.Node == y.Node && slices.Equal(x.Tags, y.Tags)
	})
}
