package coordinator_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// A node restored from a snapshot (a VM's, a backup of its state
// directory) numbers its next audit events from where the snapshot left
// off, so they reuse sequence numbers the coordinator already holds for
// other events. Every event still reaches the coordinator: those of before
// the restore and those of after, with nothing silently dropped as a
// duplicate, and shipping goes on.
func TestAuditEventsOfARestoredNodeAreAllKept(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	n := l.start("server")
	dir := filepath.Join(t.TempDir(), "audit")
	ev := func(tool string) api.AuditEvent {
		return api.AuditEvent{Time: time.Now(), Caller: "spiffe://test.mcpmesh/node/laptop", Service: "ehr",
			Method: "tools/call", Tool: tool, Decision: "allow", Reason: "grant", Policy: 1}
	}
	// ship appends the events to the log in dir and ships until the
	// coordinator has acknowledged them all.
	ship := func(tools ...string) {
		t.Helper()
		log, err := auditlog.Open(dir, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		for _, tool := range tools {
			if err := log.Record(ev(tool)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(l.ctx)
		done := make(chan struct{})
		go func() { defer close(done); log.Ship(ctx, n.Client.ShipAudit) }()
		l.waitFor("the events to be acknowledged", func() bool { w, a := log.Stats(); return a == w })
		cancel()
		<-done
	}
	ship("first-1", "first-2", "first-3")
	snapshot := filepath.Join(t.TempDir(), "snapshot")
	copyDir(t, dir, snapshot)
	ship("lost-to-the-restore-1", "lost-to-the-restore-2")

	// Restored: the log is back at three events, and numbers the next
	// ones 4 and 5 again.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, snapshot, dir)
	ship("after-restore-1", "after-restore-2", "after-restore-3")

	got := l.auditTools("ehr")
	for _, tool := range []string{"first-1", "first-2", "first-3", "lost-to-the-restore-1", "lost-to-the-restore-2",
		"after-restore-1", "after-restore-2", "after-restore-3"} {
		if got[tool] != 1 {
			t.Errorf("the coordinator holds %d events of %s, want 1; it holds %v", got[tool], tool, got)
		}
	}
}

// copyDir copies the regular files of dir src into a new directory dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
