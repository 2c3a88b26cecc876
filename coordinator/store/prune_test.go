package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// PruneAudit deletes every event before the cut, across more than one of
// its transactions, and nothing after it.
func TestPruneAuditDeletesOnlyOlderEvents(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	cut := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const old, recent = 25_001, 5 // old spans three of PruneAudit's batches
	var evs []api.AuditEvent
	for i := range old + recent {
		at := cut.Add(-time.Duration(old-i) * time.Second) // the last old one is 1 s before the cut
		if i >= old {
			at = cut.Add(time.Duration(i-old) * time.Second) // the first recent one is at the cut
		}
		evs = append(evs, api.AuditEvent{Seq: uint64(i + 1), Time: at, Service: "ehr", Method: "tools/call", Decision: "allow"})
	}
	for len(evs) > 0 {
		n := min(len(evs), 1000)
		if _, err := s.AppendAudit(ctx, "server", evs[:n]); err != nil {
			t.Fatal(err)
		}
		evs = evs[n:]
	}
	n, err := s.PruneAudit(ctx, cut)
	if err != nil || n != old {
		t.Fatalf("PruneAudit = %d, %v; want %d", n, err, old)
	}
	left, err := s.Audit(ctx, api.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != recent {
		t.Fatalf("%d events left, want %d", len(left), recent)
	}
	for _, e := range left {
		if e.Time.Before(cut) {
			t.Errorf("event %d at %s survived a cut at %s", e.Seq, e.Time, cut)
		}
	}
	if n, err := s.PruneAudit(ctx, cut); err != nil || n != 0 {
		t.Errorf("second PruneAudit = %d, %v; want 0", n, err)
	}
}
