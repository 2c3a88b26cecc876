package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// maxPolicyBytes bounds a policy file; a larger one is refused unparsed.
const maxPolicyBytes = api.MaxRequestBytes * 12 // the body is JSON with the source base64'd

// compilePolicy parses and tests a policy, answering 422 with every error
// (line:column) when it is invalid. An invalid policy never replaces a
// valid one: callers store only what this returns.
func compilePolicy(w http.ResponseWriter, src api.PolicySource) (*policy.Policy, bool) {
	name := src.Filename
	if name == "" {
		name = "policy.hujson"
	}
	pol, err := policy.Parse(name, src.Source)
	if err != nil {
		body := api.PolicyErrors{Error: fmt.Sprintf("%s is not a valid policy", name)}
		var list policy.ErrorList
		var one *policy.Error
		switch {
		case errors.As(err, &list):
			for _, e := range list {
				body.Errors = append(body.Errors, api.PolicyError{Line: e.Line, Col: e.Col, Msg: e.Msg})
			}
		case errors.As(err, &one):
			body.Errors = append(body.Errors, api.PolicyError{Line: one.Line, Col: one.Col, Msg: one.Msg})
		default:
			body.Errors = append(body.Errors, api.PolicyError{Msg: err.Error()})
		}
		writeJSON(w, http.StatusUnprocessableEntity, body)
		return nil, false
	}
	return pol, true
}

func (s *Server) handlePolicyCheck(w http.ResponseWriter, r *http.Request) {
	var src api.PolicySource
	if !s.readPolicy(w, r, &src) {
		return
	}
	if pol, ok := compilePolicy(w, src); ok {
		writeJSON(w, http.StatusOK, api.PolicyCheckResponse{Grants: pol.Grants(), Tests: pol.Tests()})
	}
}

func (s *Server) readPolicy(w http.ResponseWriter, r *http.Request, src *api.PolicySource) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxPolicyBytes)
	return readJSONUnbounded(w, r, src)
}

func (s *Server) handlePolicyApply(w http.ResponseWriter, r *http.Request) {
	var src api.PolicySource
	if !s.readPolicy(w, r, &src) {
		return
	}
	pol, ok := compilePolicy(w, src)
	if !ok {
		return
	}
	s.storePolicy(w, r, pol, "")
}

// storePolicy stores pol as a new version and pushes it to every stream.
func (s *Server) storePolicy(w http.ResponseWriter, r *http.Request, pol *policy.Policy, note string) {
	author, _ := identity.PeerID(r.TLS)
	s.mu.Lock()
	defer s.mu.Unlock()
	pv, nv, err := s.store.AddPolicy(r.Context(), store.PolicyVersion{
		Source: pol.Source(), Filename: pol.File(), Author: author.String(), Created: s.now(), Note: note,
	})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.applyPolicyLocked(pol, pv, nv)
	s.log.Info("policy applied", "version", pv, "author", author, "grants", pol.Grants(), "tests", pol.Tests(), "note", note)
	writeJSON(w, http.StatusOK, api.PolicyCheckResponse{Version: pv, Grants: pol.Grants(), Tests: pol.Tests(), Warnings: s.ignoredTagsLocked()})
}

// ignoredTagsLocked says, for the admin who just applied a policy, which
// published services carry a tag the policy does not let their node use:
// grants to that tag do not reach them. Sorted, so the answer is stable.
func (s *Server) ignoredTagsLocked() []string {
	var out []string
	for name, sv := range s.mu.services {
		eff := s.mu.vis.svc[name]
		for _, t := range sv.Tags {
			if !slices.Contains(eff.Tags, t) {
				out = append(out, fmt.Sprintf("service %q of node %q carries %s, which tagOwners does not let %q use: the tag is ignored, and grants to it do not reach the service", name, sv.Node, t, sv.Node))
			}
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) handlePolicyGet(w http.ResponseWriter, r *http.Request) {
	var v uint64
	if q := r.URL.Query().Get("version"); q != "" {
		var err error
		if v, err = strconv.ParseUint(q, 10, 64); err != nil || v == 0 {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("version %q is not a positive number", q))
			return
		}
	}
	pv, err := s.store.Policy(r.Context(), v)
	if errors.Is(err, store.ErrNotFound) {
		httpError(w, http.StatusNotFound, strings.TrimPrefix(err.Error(), "store: not found: "))
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, apiPolicyVersion(pv))
}

func apiPolicyVersion(pv store.PolicyVersion) api.PolicyVersion {
	return api.PolicyVersion{Version: pv.Version, Filename: pv.Filename, Author: pv.Author, Created: pv.Created, Note: pv.Note, Source: pv.Source}
}

func (s *Server) handlePolicyHistory(w http.ResponseWriter, r *http.Request) {
	h, err := s.store.PolicyHistory(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := []api.PolicyVersion{}
	for _, pv := range h {
		out = append(out, apiPolicyVersion(pv))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handlePolicyRollback(w http.ResponseWriter, r *http.Request) {
	var req api.RollbackRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Version == 0 {
		httpError(w, http.StatusBadRequest, "rollback needs a version (see `mcpmesh policy history`)")
		return
	}
	pv, err := s.store.Policy(r.Context(), req.Version)
	if errors.Is(err, store.ErrNotFound) {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no policy version %d (see `mcpmesh policy history`)", req.Version))
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The old source is compiled and tested again: a rollback is refused
	// like any apply if it no longer holds.
	pol, ok := compilePolicy(w, api.PolicySource{Filename: pv.Filename, Source: pv.Source})
	if !ok {
		return
	}
	s.storePolicy(w, r, pol, fmt.Sprintf("rollback to v%d", req.Version))
}

func (s *Server) handlePolicyExplain(w http.ResponseWriter, r *http.Request) {
	var req api.ExplainRequest
	if !readJSON(w, r, &req) {
		return
	}
	kind, ok := map[string]policy.Kind{"": policy.KindTool, "tool": policy.KindTool, "resource": policy.KindResource, "prompt": policy.KindPrompt}[req.Kind]
	if !ok {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("kind %q: want tool, resource or prompt", req.Kind))
		return
	}
	dst, ok := strings.CutPrefix(req.Dst, "svc:")
	if !ok || dst == "" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("--dst %q: want svc:NAME", req.Dst))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var src policy.Identity
	switch {
	case strings.HasPrefix(req.Src, "node:"):
		n := s.mu.nodes[strings.TrimPrefix(req.Src, "node:")]
		if n == nil {
			httpError(w, http.StatusNotFound, fmt.Sprintf("no node named %q (see `mcpmesh nodes list`)", strings.TrimPrefix(req.Src, "node:")))
			return
		}
		src = identityOf(n)
	case strings.HasPrefix(req.Src, "spiffe://"):
		src = policy.Identity{ID: req.Src}
		for _, n := range s.mu.nodes {
			if n.ID == req.Src {
				src = identityOf(n)
			}
		}
	default:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("--src %q: want node:NAME or a SPIFFE ID", req.Src))
		return
	}
	svc := policy.Service{Name: dst}
	if sv, ok := s.mu.vis.svc[dst]; ok {
		svc = serviceOf(sv) // with the tags its node may use
	}
	if s.mu.vis.pol == nil {
		writeJSON(w, http.StatusOK, api.ExplainResponse{Explanation: "deny: no policy has been applied (default deny)"})
		return
	}
	req2 := policy.Request{Src: src, Dst: svc, Kind: kind, Name: req.Name, Args: req.Args}
	d := s.mu.vis.pol.Decide(req2)
	writeJSON(w, http.StatusOK, api.ExplainResponse{Allow: d.Allow, Explanation: s.mu.vis.pol.Explain(req2), PolicyVersion: s.mu.vis.polVer})
}
