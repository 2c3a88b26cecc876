package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// PruneAudit deletes every event received before the cut, across more
// than one of its transactions, and nothing received after it, whatever
// the events' own times say: those are the nodes' clocks. Here the old
// events come from a node whose clock is a year ahead and the recent ones
// from a node whose clock is ten years behind.
func TestPruneAuditDeletesOnlyEventsReceivedBefore(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	cut := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const old, recent = 25_001, 5 // old spans three of PruneAudit's batches
	ship := func(node string, received, at time.Time, n int) {
		t.Helper()
		var evs []api.AuditEvent
		for i := range n {
			evs = append(evs, api.AuditEvent{Seq: uint64(i + 1), Time: at.Add(time.Duration(i) * time.Second),
				Service: "ehr", Method: "tools/call", Decision: "allow"})
		}
		for len(evs) > 0 {
			k := min(len(evs), 1000)
			if _, err := s.AppendAudit(ctx, node, received, evs[:k]); err != nil {
				t.Fatal(err)
			}
			evs = evs[k:]
		}
	}
	ship("ahead", cut.Add(-time.Second), cut.AddDate(1, 0, 0), old) // received 1 s before the cut
	ship("behind", cut, cut.AddDate(-10, 0, 0), recent)             // received at the cut
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
		if e.Node != "behind" {
			t.Errorf("event %d of %s, received before the cut, survived it", e.Seq, e.Node)
		}
	}
	if n, err := s.PruneAudit(ctx, cut); err != nil || n != 0 {
		t.Errorf("second PruneAudit = %d, %v; want 0", n, err)
	}
}

// A store made before receipt times were kept gets the column, and its
// events count from their own times, the best there is for them: a prune
// takes the old ones and leaves the recent ones.
func TestStoreWithoutReceiptTimesIsUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range []string{
		`CREATE TABLE audit (node TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, caller TEXT NOT NULL,
			service TEXT NOT NULL, method TEXT NOT NULL, tool TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL,
			policy INTEGER NOT NULL, latency INTEGER NOT NULL, digest TEXT NOT NULL, session TEXT NOT NULL, PRIMARY KEY (node, seq))`,
		`CREATE INDEX audit_time ON audit(time)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// From a node whose clock ran ahead: kept too long, rather than
	// clamped to a coordinator clock that may itself be wrong at start.
	ahead := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	for seq, at := range map[int]time.Time{1: cut.AddDate(-2, 0, 0), 2: cut.Add(time.Hour), 4: ahead} {
		if _, err := old.Exec(`INSERT INTO audit VALUES ('server', ?, ?, 'c', 'ehr', 'tools/call', 'echo', 'allow', 'r', 1, 5, 'd', 's')`,
			seq, at.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	s := open(t, path)
	ctx := context.Background()
	if n, err := s.PruneAudit(ctx, cut); err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v; want the event two years old", n, err)
	}
	// New events carry their receipt time: one received now outlives the
	// cut whatever its own time.
	if res, err := s.AppendAudit(ctx, "server", cut.Add(time.Minute), []api.AuditEvent{{Seq: 3, Time: cut.AddDate(-5, 0, 0)}}); err != nil || res.Stored != 3 {
		t.Fatalf("AppendAudit after the upgrade = %+v, %v; want 3 stored", res, err)
	}
	// An event from before the upgrade, sent again (its acknowledgement
	// was lost), is still a duplicate.
	again := api.AuditEvent{Seq: 2, Time: time.Unix(0, cut.Add(time.Hour).UnixNano()), Node: "server", Caller: "c", Service: "ehr",
		Method: "tools/call", Tool: "echo", Decision: "allow", Reason: "r", Policy: 1, LatencyUS: 5, ArgsDigest: "d", Session: "s"}
	if res, err := s.AppendAudit(ctx, "server", cut.Add(time.Minute), []api.AuditEvent{again}); err != nil || res.Reused != 0 {
		t.Fatalf("AppendAudit of an event from before the upgrade, again = %+v, %v; want it skipped", res, err)
	}
	// The upgraded table keys events by variant: an event reusing the
	// sequence of one from before the upgrade, with other content, is
	// kept beside it.
	if res, err := s.AppendAudit(ctx, "server", cut.Add(time.Minute), []api.AuditEvent{{Seq: 2, Time: cut.Add(2 * time.Hour), Tool: "other"}}); err != nil || res.Reused != 1 {
		t.Fatalf("AppendAudit of a reused sequence after the upgrade = %+v, %v; want 1 reused", res, err)
	}
	s.Close()
	s = open(t, path) // and opening it again changes nothing
	if n, err := s.PruneAudit(ctx, cut); err != nil || n != 0 {
		t.Fatalf("PruneAudit after reopening = %d, %v; want 0", n, err)
	}
	left, err := s.Audit(ctx, api.AuditQuery{})
	if err != nil || len(left) != 4 {
		t.Fatalf("events left = %d, %v; want 4", len(left), err)
	}
	for _, e := range left {
		if e.Seq == 4 && !e.Received.Equal(ahead) {
			t.Errorf("an event from before the upgrade dated %s counts as received %s; want its own time", e.Time, e.Received)
		}
	}
}

// AppendAudit skips an event sent again (same sequence, same content), as
// a node does after a lost acknowledgement, and keeps one that reuses a
// sequence with other content, as a node restored from a snapshot sends;
// its answer is the batch's highest sequence either way.
func TestAppendAuditKeepsEventsThatReuseASequence(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	ev := func(seq uint64, tool string) api.AuditEvent {
		return api.AuditEvent{Seq: seq, Time: at.Add(time.Duration(seq) * time.Second), Node: "server", Caller: "spiffe://td/node/a",
			Service: "ehr", Method: "tools/call", Tool: tool, Decision: "allow", Reason: "grant", Policy: 3, LatencyUS: 12, ArgsDigest: "hmac-sha256:00", Session: "s"}
	}
	first := []api.AuditEvent{ev(1, "a"), ev(2, "b"), ev(3, "c")}
	for _, tc := range []struct {
		name       string
		batch      []api.AuditEvent
		stored     uint64
		reused, in int
	}{
		{"first", first, 3, 0, 3},
		{"sent again", first, 3, 0, 3},
		{"in another time zone", []api.AuditEvent{withZone(ev(2, "b"))}, 2, 0, 3},
		{"after a restore", []api.AuditEvent{ev(2, "b-again"), ev(3, "c-again"), ev(4, "d")}, 4, 2, 6},
		{"after a restore, sent again", []api.AuditEvent{ev(3, "c-again"), ev(4, "d")}, 4, 0, 6},
		{"a third variant", []api.AuditEvent{ev(3, "c-third")}, 3, 1, 7},
	} {
		res, err := s.AppendAudit(ctx, "server", at, tc.batch)
		if err != nil || res.Stored != tc.stored || res.Reused != tc.reused {
			t.Fatalf("%s: AppendAudit = %+v, %v; want %d stored, %d reused", tc.name, res, err, tc.stored, tc.reused)
		}
		all, err := s.Audit(ctx, api.AuditQuery{})
		if err != nil || len(all) != tc.in {
			t.Fatalf("%s: %d events held, %v; want %d", tc.name, len(all), err, tc.in)
		}
	}
}

// withZone is e with its time in another zone, as a node's JSON may
// carry it: the same instant.
func withZone(e api.AuditEvent) api.AuditEvent {
	e.Time = e.Time.In(time.FixedZone("UTC+2", 2*3600))
	return e
}

// A sequence whose first variant retention deleted takes a new one after
// the highest still stored, not at the count of those left (which is the
// key of one still there), and the rest of the batch is stored with it.
func TestAppendAuditAfterAPruneTakesTheNextVariant(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(seq uint64, tool string) api.AuditEvent {
		return api.AuditEvent{Seq: seq, Time: t0, Service: "ehr", Method: "tools/call", Tool: tool, Decision: "allow"}
	}
	for i, tool := range []string{"a", "b"} {
		if _, err := s.AppendAudit(ctx, "n", t0.Add(time.Duration(i)*48*time.Hour), []api.AuditEvent{ev(7, tool)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneAudit(ctx, t0.Add(24*time.Hour)); err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v; want the first variant", n, err)
	}
	res, err := s.AppendAudit(ctx, "n", t0.Add(72*time.Hour), []api.AuditEvent{ev(7, "c"), ev(8, "d")})
	if err != nil || res.Stored != 8 || res.Reused != 1 {
		t.Fatalf("AppendAudit after the prune = %+v, %v; want 8 stored, 1 reused", res, err)
	}
	got := map[string]int{}
	evs, err := s.Audit(ctx, api.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		got[e.Tool] = e.Variant
	}
	if len(got) != 3 || got["b"] != 1 || got["c"] != 2 || got["d"] != 0 {
		t.Fatalf("events by tool and variant: %v; want b 1, c 2, d 0", got)
	}
}

// BenchmarkAppendAuditManyVariants appends batches of 1,000 events that
// all reuse one sequence (as a node may, to weigh on the coordinator),
// against batches of 1,000 fresh sequences in the same run: a batch must
// not cost more as the variants pile up.
//
//	go test ./coordinator/store -run '^$' -bench AppendAuditManyVariants -benchtime 4x
func BenchmarkAppendAuditManyVariants(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "store.db"))
	ctx := context.Background()
	t0 := time.Now()
	k := uint64(0)
	batch := func(node string, sameSeq bool) time.Duration {
		evs := make([]api.AuditEvent, 1000)
		for i := range evs {
			k++
			seq := k
			if sameSeq {
				seq = 1
			}
			evs[i] = api.AuditEvent{Seq: seq, Time: t0, Service: "ehr", Method: "tools/call", Tool: strconv.FormatUint(k, 10), Decision: "allow"}
		}
		start := time.Now()
		if _, err := s.AppendAudit(ctx, node, t0, evs); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var fresh, reused time.Duration
	for range b.N {
		fresh += batch("honest", false)
		reused += batch("hostile", true)
	}
	b.ReportMetric(float64(fresh.Microseconds())/float64(b.N), "fresh-µs/batch")
	b.ReportMetric(float64(reused.Microseconds())/float64(b.N), "one-seq-µs/batch")
	b.ReportMetric(float64(reused)/float64(fresh), "ratio")
	b.ReportMetric(0, "ns/op")
}

// Every field a node says is part of what makes an event itself: an
// event that differs from a stored one in any of them alone is another
// variant, not a duplicate to drop (a restored node's deny event must not
// vanish for looking like an allow). The node's name, which the
// coordinator sets, is not.
func TestAuditFingerprintCoversEveryFieldANodeSays(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	base := api.AuditEvent{Seq: 1, Time: at, Caller: "spiffe://td/node/a", Service: "ehr", Method: "tools/call", Tool: "read",
		Decision: "allow", Reason: "grant", Policy: 3, LatencyUS: 12, ArgsDigest: "hmac-sha256:00", Session: "s"}
	if _, err := s.AppendAudit(ctx, "n", at, []api.AuditEvent{base}); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*api.AuditEvent){
		"time":     func(e *api.AuditEvent) { e.Time = e.Time.Add(time.Nanosecond) },
		"caller":   func(e *api.AuditEvent) { e.Caller += "x" },
		"service":  func(e *api.AuditEvent) { e.Service += "x" },
		"method":   func(e *api.AuditEvent) { e.Method += "x" },
		"tool":     func(e *api.AuditEvent) { e.Tool += "x" },
		"decision": func(e *api.AuditEvent) { e.Decision = "deny" },
		"reason":   func(e *api.AuditEvent) { e.Reason += "x" },
		"policy":   func(e *api.AuditEvent) { e.Policy++ },
		"latency":  func(e *api.AuditEvent) { e.LatencyUS++ },
		"digest":   func(e *api.AuditEvent) { e.ArgsDigest += "x" },
		"session":  func(e *api.AuditEvent) { e.Session += "x" },
		// Moving a byte from one field to the next is another event too.
		"boundary": func(e *api.AuditEvent) { e.Caller, e.Service = e.Caller+"e", "hr" },
	} {
		e := base
		change(&e)
		if res, err := s.AppendAudit(ctx, "n", at, []api.AuditEvent{e}); err != nil || res.Reused != 1 {
			t.Errorf("%s changed: AppendAudit = %+v, %v; want it kept as another variant", name, res, err)
		}
	}
	named := base
	named.Node = "someone-else"
	if res, err := s.AppendAudit(ctx, "n", at, []api.AuditEvent{named}); err != nil || res.Reused != 0 {
		t.Errorf("only the node's name changed: AppendAudit = %+v, %v; want a duplicate", res, err)
	}
}

// Opening a store leaves receipt times as they are, even ahead of the
// clock: a coordinator that starts with its clock behind (before NTP)
// must not date the trail back, for retention to delete it all once the
// clock is right.
func TestOpeningLeavesReceiptTimesAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := open(t, path)
	ahead := time.Now().AddDate(50, 0, 0)
	if _, err := s.AppendAudit(context.Background(), "n", ahead, []api.AuditEvent{{Seq: 1, Time: time.Now(), Decision: "allow"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	evs, err := s.Audit(context.Background(), api.AuditQuery{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("Audit = %v, %v", evs, err)
	}
	if !evs[0].Received.Equal(ahead) {
		t.Fatalf("received %s after reopening; want %s as stored", evs[0].Received, ahead)
	}
}
