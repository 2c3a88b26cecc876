package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/identity"
)

// maxServicesPerNode bounds what one node may publish.
const maxServicesPerNode = 256

// handleServices replaces the set of services the calling node publishes.
func (s *Server) handleServices(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var req api.ServicesRequest
	if !readJSON(w, r, &req) {
		return
	}
	if len(req.Services) > maxServicesPerNode {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("a node may publish at most %d services", maxServicesPerNode))
		return
	}
	svcs := make([]store.Service, 0, len(req.Services))
	seen := map[string]bool{}
	for _, sp := range req.Services {
		if err := identity.ValidateNodeName(sp.Name); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("service name %q: must be lowercase letters, digits and '-'", sp.Name))
			return
		}
		if seen[sp.Name] {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("service %q listed twice", sp.Name))
			return
		}
		seen[sp.Name] = true
		for _, t := range sp.Tags {
			if err := validateTag(t); err != nil {
				httpError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		tags := slices.Clone(sp.Tags)
		slices.Sort(tags)
		svcs = append(svcs, store.Service{Name: sp.Name, Node: c.name, Tags: slices.Compact(tags)})
	}
	slices.SortFunc(svcs, func(a, b store.Service) int { return strings.Compare(a.Name, b.Name) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg := s.tagRefusalLocked(c.name, svcs); msg != "" {
		// 409, not 403: the node sends its whole set again on every
		// reconnection, and a 403 would make it give up on the
		// coordinator for good instead of waiting for the policy (or
		// its services) to change.
		httpError(w, http.StatusConflict, msg)
		return
	}
	for _, sv := range svcs {
		if held, ok := s.mu.services[sv.Name]; ok && held.Node != c.name {
			httpError(w, http.StatusConflict, fmt.Sprintf("service %q is published by node %q", sv.Name, held.Node))
			return
		}
	}
	// Refusals come first: a set refused at every reconnection must keep
	// being refused for what it is, not run out the node's changes.
	if !s.sameServicesLocked(c.name, svcs) {
		if ok, wait := s.allowChangeLocked(c.name); !ok {
			tooManyChanges(w, "services", wait)
			return
		}
	}
	version, changed, err := s.store.SetServices(r.Context(), c.name, svcs)
	switch {
	case errors.Is(err, store.ErrServiceTaken):
		httpError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if changed {
		for name, sv := range s.mu.services {
			if sv.Node == c.name {
				delete(s.mu.services, name)
			}
		}
		for _, sv := range svcs {
			s.mu.services[sv.Name] = sv
		}
		s.mu.vis.setServices(c.name, svcs, s.mu.nodes)
		s.applyLocked(s.mu.nodes[c.name], version, store.EventServices)
		s.log.Info("services published", "node", c.name, "services", len(svcs), "version", version)
	}
	w.WriteHeader(http.StatusNoContent)
}

// sameServicesLocked reports whether svcs (sorted by name, tags sorted) is
// the set node publishes already, as it sends it again on reconnection.
func (s *Server) sameServicesLocked(node string, svcs []store.Service) bool {
	n := 0
	for _, sv := range s.mu.services {
		if sv.Node == node {
			n++
		}
	}
	if n != len(svcs) {
		return false
	}
	for _, sv := range svcs {
		held, ok := s.mu.services[sv.Name]
		if !ok || held.Node != node || !slices.Equal(held.Tags, sv.Tags) {
			return false
		}
	}
	return true
}

// tagRefusalLocked explains why node may not publish svcs, or returns ""
// when it may: under a policy, each tag of a service must be one that
// tagOwners lets the node use. A tag the coordinator already holds for the
// same service of the same node is let through, so that the set a node
// sends again on reconnection is never refused for a policy that changed
// since; such a tag is ignored all the same while the node may not use it
// (visibility.effective). In an open mesh every tag is accepted: no call is
// allowed until a policy exists, and that policy then decides.
func (s *Server) tagRefusalLocked(node string, svcs []store.Service) string {
	pol, n := s.mu.vis.pol, s.mu.nodes[node]
	if pol == nil || n == nil {
		return ""
	}
	id := identityOf(n)
	for _, sv := range svcs {
		held := s.mu.services[sv.Name]
		for _, t := range sv.Tags {
			if pol.MayUseTag(id, strings.TrimPrefix(t, "tag:")) || (held.Node == node && slices.Contains(held.Tags, t)) {
				continue
			}
			hint := ""
			if len(n.Tags) > 0 {
				hint = fmt.Sprintf(" (or one of its tags: %s)", strings.Join(n.Tags, ", "))
			}
			return fmt.Sprintf("service %q may not carry %s: policy v%d does not let node %q use it; "+
				"an admin can add %q%s to tagOwners[%q] in the policy, or serve %s again without %s",
				sv.Name, t, s.mu.vis.polVer, node, "node:"+node, hint, t, sv.Name, t)
		}
	}
	return ""
}

// handleServicesList answers the admin with every published service and
// the tags it carries under the current policy.
func (s *Server) handleServicesList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := api.ServiceList{Services: []api.Service{}}
	for _, sv := range s.mu.vis.svc {
		out.Services = append(out.Services, api.Service{Name: sv.Name, Node: sv.Node, Tags: sv.Tags})
	}
	s.mu.Unlock()
	slices.SortFunc(out.Services, func(a, b api.Service) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}
