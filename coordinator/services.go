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

func (s *Server) handleServicesList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := api.ServiceList{Services: []api.Service{}}
	for _, sv := range s.mu.services {
		out.Services = append(out.Services, api.Service{Name: sv.Name, Node: sv.Node, Tags: sv.Tags})
	}
	s.mu.Unlock()
	slices.SortFunc(out.Services, func(a, b api.Service) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}
