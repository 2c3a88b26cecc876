package coordinator

import (
	"fmt"
	"net/http"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// maxAuditBatch bounds what a node may ship at once.
const maxAuditBatch = 1000

// handleAudit stores a batch of the calling node's audit events. The node
// name comes from its SVID, never from the events, so a node cannot write
// another's trail.
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	r.Body = http.MaxBytesReader(w, r.Body, 4<<20)
	var b api.AuditBatch
	if !readJSONUnbounded(w, r, &b) {
		return
	}
	if len(b.Events) > maxAuditBatch {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("at most %d events per batch", maxAuditBatch))
		return
	}
	for i := range b.Events {
		if b.Events[i].Seq == 0 {
			httpError(w, http.StatusBadRequest, "audit event without a sequence number")
			return
		}
		b.Events[i].Node = c.name
	}
	res, err := s.store.AppendAudit(r.Context(), c.name, s.now(), b.Events)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if res.Reused > 0 && s.warnReuse(c.name) {
		s.log.Warn("a node sent audit events under sequence numbers it had used for others (restored from a snapshot or backup?); both are kept",
			"node", c.name, "events", res.Reused, "up_to_seq", res.Stored)
	}
	writeJSON(w, http.StatusOK, api.AuditAck{Stored: res.Stored})
}

func (s *Server) handleAuditQuery(w http.ResponseWriter, r *http.Request) {
	var q api.AuditQuery
	if !readJSON(w, r, &q) {
		return
	}
	if q.Decision != "" && q.Decision != "allow" && q.Decision != "deny" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("decision %q: want allow or deny", q.Decision))
		return
	}
	evs, err := s.store.Audit(r.Context(), q)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if evs == nil {
		evs = []api.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// handleExposure stores the calling node's exposure report, named by its
// SVID, replacing its previous one.
func (s *Server) handleExposure(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	var rep api.ExposureReport
	if !readJSONUnbounded(w, r, &rep) {
		return
	}
	if len(rep.Findings) > api.MaxExposureFindings {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("at most %d findings per report", api.MaxExposureFindings))
		return
	}
	if rep.ScannedAt.IsZero() {
		httpError(w, http.StatusBadRequest, "exposure report without a scan time")
		return
	}
	rep.Node = c.name
	if err := s.store.SetExposure(r.Context(), rep); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleExposureList(w http.ResponseWriter, r *http.Request) {
	reps, err := s.store.Exposure(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, reps)
}

// reuseWarnEvery bounds how often one node is warned about: a node
// restored from a snapshot reuses many numbers at once, and a hostile one
// could do it in every request.
const reuseWarnEvery = time.Minute

// warnReuse reports whether to warn now that node reused audit sequence
// numbers.
func (s *Server) warnReuse(node string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.mu.reuseWarned[node]; ok && now.Sub(last) < reuseWarnEvery {
		return false
	}
	s.mu.reuseWarned[node] = now
	return true
}
