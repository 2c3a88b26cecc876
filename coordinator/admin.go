package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/identity"
)

// Bounds on join tokens an admin may create.
const (
	DefaultTokenTTL = 24 * time.Hour
	maxTokenTTL     = 365 * 24 * time.Hour
)

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreateRequest
	if !readJSON(w, r, &req) {
		return
	}
	ttl := time.Duration(req.TTL)
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0 || ttl > maxTokenTTL:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("ttl %s is out of range (0 < ttl <= %s)", ttl, maxTokenTTL))
		return
	}
	for _, t := range req.Tags {
		if err := validateTag(t); err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if req.Name != "" {
		if err := identity.ValidateNodeName(req.Name); err != nil {
			httpError(w, http.StatusBadRequest, "name: "+err.Error())
			return
		}
	}
	tok, err := identity.NewToken(s.ca.Fingerprint())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	now := s.now()
	h := tok.SecretHash()
	rec := store.Token{ID: tok.ID, SecretHash: h[:], Tags: req.Tags, Reusable: req.Reusable, Created: now, Expires: now.Add(ttl), Name: req.Name}
	if err := s.store.CreateToken(r.Context(), rec); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("join token created", "id", tok.ID, "tags", req.Tags, "reusable", req.Reusable, "name", req.Name, "expires", rec.Expires)
	writeJSON(w, http.StatusOK, api.TokenCreateResponse{Token: tok.String(), Expires: rec.Expires})
}

// validateTag checks the form tag:NAME with NAME a DNS-label-like word.
func validateTag(t string) error {
	name, ok := strings.CutPrefix(t, "tag:")
	if !ok || identity.ValidateNodeName(name) != nil {
		return fmt.Errorf("tag %q must look like tag:name (lowercase letters, digits and '-')", t)
	}
	return nil
}

func (s *Server) handleNodesList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := api.NodeList{Nodes: make([]api.Node, 0, len(s.mu.nodes))}
	for _, n := range s.mu.nodes {
		_, online := s.mu.subs[n.Name]
		out.Nodes = append(out.Nodes, apiNode(n, online))
	}
	s.mu.Unlock()
	slices.SortFunc(out.Nodes, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	version, serials, err := s.store.Revoke(r.Context(), name, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		httpError(w, http.StatusNotFound, fmt.Sprintf("no node named %q; see `mcpmesh nodes list`", name))
		return
	case errors.Is(err, store.ErrRevoked):
		httpError(w, http.StatusConflict, fmt.Sprintf("node %q is already revoked", name))
		return
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The store released the node's service names with the revocation.
	for svc, sv := range s.mu.services {
		if sv.Node == name {
			delete(s.mu.services, svc)
		}
	}
	n := *s.mu.nodes[name]
	n.RevokedAt = s.now()
	s.applyLocked(&n, version, store.EventRevoke)
	s.log.Info("node revoked", "node", name, "version", version, "serials", len(serials))
	w.WriteHeader(http.StatusNoContent)
}
