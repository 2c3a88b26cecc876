package auditlog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
)

func ev(tool string) api.AuditEvent {
	return api.AuditEvent{Time: time.Now(), Caller: "spiffe://td/node/a", Service: "ehr", Method: "tools/call", Tool: tool, Decision: "deny"}
}

// openWith opens a log in dir and records an event for each tool; the
// log is closed when the test ends, if not before.
func openWith(t *testing.T, dir string, tools ...string) *auditlog.Log {
	t.Helper()
	l, err := auditlog.Open(dir, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, tool := range tools {
		if err := l.Record(ev(tool)); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// reopen opens the log in dir again, as a restarted node does, and reads
// back every event in it; the log is closed when the test ends.
func reopen(t *testing.T, dir string) (*auditlog.Log, []api.AuditEvent) {
	t.Helper()
	l, err := auditlog.Open(dir, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	all, err := l.Read(func(*api.AuditEvent) bool { return true }, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	return l, all
}

func TestSequenceSurvivesRestartAndTornTail(t *testing.T) {
	dir := t.TempDir()
	openWith(t, dir, "a", "b", "c").Close()
	// A crash mid-append leaves half a line.
	f, _ := os.OpenFile(filepath.Join(dir, "audit.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"time":"2026-`)
	f.Close()

	l := openWith(t, dir, "d")
	all, err := l.Read(func(*api.AuditEvent) bool { return true }, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[3].Seq != 4 || all[3].Tool != "d" {
		t.Fatalf("after restart: %+v", all)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "audit.jsonl")); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %o", fi.Mode().Perm())
	}
}

func TestShippingLosesNothingAcrossAnOutage(t *testing.T) {
	l, err := auditlog.Open(t.TempDir(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	got := map[uint64]int{}
	down := true
	send := func(_ context.Context, evs []api.AuditEvent) (uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return 0, errors.New("coordinator unreachable")
		}
		var max uint64
		for _, e := range evs {
			got[e.Seq]++
			max = e.Seq
		}
		return max, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Ship(ctx, send) }()
	for i := range 20 {
		if err := l.Record(ev(string(rune('a' + i)))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	down = false
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, acked := l.Stats(); acked == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events were not shipped after the outage")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for s := uint64(1); s <= 20; s++ {
		if got[s] != 1 {
			t.Fatalf("event %d shipped %d times", s, got[s])
		}
	}
}

// Appends from many goroutines share fsyncs, every Sync returns only when
// its event is covered, and an event appended but never synced still
// reaches the file when the log closes.
func TestGroupCommitCoversEveryEvent(t *testing.T) {
	dir := t.TempDir()
	l, err := auditlog.Open(dir, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				seq, err := l.Append(ev("x"))
				if err == nil {
					err = l.Sync(seq)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	last, err := l.Append(ev("unsynced"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(last); err != nil {
		t.Errorf("Sync after Close of an event Close flushed: %v", err)
	}
	l, all := reopen(t, dir)
	if len(all) != workers*each+1 || all[len(all)-1].Tool != "unsynced" {
		t.Fatalf("after reopen: %d events, last %+v", len(all), all[len(all)-1])
	}
	for i, e := range all { // written together, yet whole lines in sequence order
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, e.Seq)
		}
	}
	if _, err := l.Append(ev("y")); err != nil {
		t.Fatal(err)
	}
}

// An audit file deleted (or replaced by an older copy) while its
// acknowledgement stays: the next events follow the acknowledged ones,
// so they are shipped, not taken for events the coordinator has.
func TestEventsAfterALostFileAreShipped(t *testing.T) {
	dir := t.TempDir()
	l := openWith(t, dir, "a", "b", "c")
	if err := l.Ack(3); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.Remove(filepath.Join(dir, "audit.jsonl")); err != nil {
		t.Fatal(err)
	}
	l = openWith(t, dir, "after")
	evs, err := l.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Tool != "after" || evs[0].Seq != 4 {
		t.Fatalf("pending after the file was lost: %+v; want the new event as seq 4", evs)
	}
	l.Close()
	// And the numbering holds across the next restart.
	l = openWith(t, dir, "later")
	if evs, err := l.Pending(100); err != nil || len(evs) != 2 || evs[1].Seq != 5 {
		t.Fatalf("pending after a restart: %+v, %v; want seqs 4 and 5", evs, err)
	}
}
