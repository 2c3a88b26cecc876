package coordinator_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// With a retention, the coordinator's audit trail loses the events it
// received longer ago than that while the recent ones stay, whatever the
// node's clock says; with none (the default), nothing is ever deleted. A
// node's shipping goes on after a prune.
func TestAuditRetentionDeletesOnlyOldEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retention time.Duration
		wantOld   bool
	}{
		{"retention 3s", 3 * time.Second, false},
		{"no retention", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := meshtest.New(t, meshtest.Options{AuditRetention: tc.retention})
			l := newLights(t, m.URL, m.Admin)
			n := l.start("server")
			ev := func(seq uint64, at time.Time, tool string) api.AuditEvent {
				return api.AuditEvent{Seq: seq, Time: at, Caller: "spiffe://test.mcpmesh/node/laptop", Service: "ehr",
					Method: "tools/call", Tool: tool, Decision: "allow", Reason: "grant", Policy: 1}
			}
			ship := func(want uint64, evs ...api.AuditEvent) {
				t.Helper()
				if stored, err := n.Client.ShipAudit(l.ctx, evs); err != nil || stored != want {
					t.Fatalf("ShipAudit = %d, %v; want %d", stored, err, want)
				}
			}
			tools := func() map[string]bool {
				got := map[string]bool{}
				for tool := range l.auditTools("ehr") {
					got[tool] = true
				}
				return got
			}
			// The node's clock is wrong both ways: years behind (its
			// events look long past the retention) and a year ahead.
			now := time.Now()
			ship(2, ev(1, now.AddDate(-5, 0, 0), "behind"), ev(2, now.AddDate(1, 0, 0), "ahead"))
			shipped := time.Now()
			time.Sleep(tc.retention / 2) // several passes of the pruner
			if got := tools(); !got["behind"] || !got["ahead"] {
				t.Fatalf("events received %s ago deleted: %v", time.Since(shipped).Round(time.Millisecond), got)
			}
			ship(3, ev(3, time.Now(), "recent"))

			deadline := shipped.Add(max(tc.retention, 1500*time.Millisecond) + time.Second)
			for tools()["behind"] && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			got := tools()
			if got["behind"] != tc.wantOld || got["ahead"] != tc.wantOld {
				t.Errorf("events received %s ago kept = %v, %v; want %v",
					time.Since(shipped).Round(time.Millisecond), got["behind"], got["ahead"], tc.wantOld)
			}
			if !got["recent"] {
				t.Error("the recent event was deleted")
			}
			// Shipping goes on after a prune: a new event is stored.
			ship(4, ev(4, time.Now(), "next"))
			if !tools()["next"] {
				t.Error("an event shipped after the prune is missing")
			}
		})
	}
}

// blockingPrune is the real store, except that a prune runs until its
// context ends: a pass over a very large trail, which Close must stop
// rather than wait out.
type blockingPrune struct {
	store.Store
	started chan struct{}
}

func (b *blockingPrune) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// Close stops a retention pass in progress instead of waiting for it to
// end (the first pass over an old trail can take minutes).
func TestCloseStopsAnAuditRetentionPass(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "coord")
	if err := coordinator.Init(dir, "test.mcpmesh", time.Now()); err != nil {
		t.Fatal(err)
	}
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	st := &blockingPrune{Store: db, started: make(chan struct{}, 1)}
	srv, err := coordinator.Open(context.Background(), dir, coordinator.Config{Store: st, AuditRetention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	select {
	case <-st.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no retention pass started")
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for the retention pass after 10 s")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
