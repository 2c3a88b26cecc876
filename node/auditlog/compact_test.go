package auditlog_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
)

// coordinatorSink stores what a log ships, acknowledging at most up to
// limit (all when limit is 0), as a coordinator that is partly behind.
type coordinatorSink struct {
	mu    sync.Mutex
	got   map[uint64]int
	limit uint64
}

func (c *coordinatorSink) send(_ context.Context, evs []api.AuditEvent) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var stored uint64
	for _, e := range evs {
		if c.limit != 0 && e.Seq > c.limit {
			break
		}
		c.got[e.Seq]++
		stored = e.Seq
	}
	return stored, nil
}

func waitAcked(t *testing.T, l *auditlog.Log, want uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, acked := l.Stats(); acked >= want {
			return
		}
		if time.Now().After(deadline) {
			_, acked := l.Stats()
			t.Fatalf("acknowledged %d of %d", acked, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func logSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A busy node's log is compacted as the coordinator acknowledges it: the
// file stays bounded, every event reaches the coordinator exactly once
// although appends race the compactions, the newest acknowledged events
// stay on the host, and the sequence goes on after a restart.
func TestCompactionBoundsTheFileAndLosesNothing(t *testing.T) {
	dir := t.TempDir()
	l, err := auditlog.Open(dir, nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const over, keep = 64 << 10, 64 << 10
	l.SetCompaction(over, keep)
	sink := &coordinatorSink{got: map[uint64]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() { defer close(shipped); l.Ship(ctx, sink.send) }()

	const writers, each = 4, 1500
	var wg sync.WaitGroup
	var peak int64
	var peakMu sync.Mutex
	for range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := l.Append(ev("t")); err != nil {
					t.Error(err)
					return
				}
				if i%100 == 0 {
					if fi, err := os.Stat(filepath.Join(dir, "audit.jsonl")); err == nil {
						peakMu.Lock()
						peak = max(peak, fi.Size())
						peakMu.Unlock()
					}
					time.Sleep(time.Millisecond) // let shipping keep up, as it does on a live node
				}
			}
		})
	}
	wg.Wait()
	const n = writers * each
	waitAcked(t, l, n)
	cancel()
	<-shipped

	sink.mu.Lock()
	for s := uint64(1); s <= n; s++ {
		if sink.got[s] != 1 {
			sink.mu.Unlock()
			t.Fatalf("event %d reached the coordinator %d times", s, sink.got[s])
		}
	}
	sink.mu.Unlock()
	size := logSize(t, dir)
	if size > over+keep+(64<<10) {
		t.Errorf("file is %d bytes after %d events were acknowledged; compaction should hold it near %d", size, n, over+keep)
	}
	kept, err := l.Read(func(*api.AuditEvent) bool { return true }, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) == 0 || kept[len(kept)-1].Seq != n || len(kept) == n {
		t.Fatalf("kept %d events ending at %v; want the newest, ending at %d, and fewer than all", len(kept), kept[len(kept)-1:], n)
	}
	for i := 1; i < len(kept); i++ {
		if kept[i].Seq != kept[i-1].Seq+1 {
			t.Fatalf("kept events skip from %d to %d", kept[i-1].Seq, kept[i].Seq)
		}
	}
	t.Logf("%d events, %d kept in %d bytes (peak seen %d)", n, len(kept), size, peak)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2, err := auditlog.Open(dir, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if seq, err := l2.Append(ev("after")); err != nil || seq != n+1 {
		t.Fatalf("first event after the restart got seq %d (%v), want %d", seq, err, n+1)
	}
}

// What the coordinator has not acknowledged is never dropped, however
// large the file: only acknowledged events go.
func TestCompactionKeepsEveryUnacknowledgedEvent(t *testing.T) {
	dir := t.TempDir()
	l, err := auditlog.Open(dir, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SetCompaction(64<<10, 64<<10)
	const n, ackTo = 3000, 1000
	for range n {
		if _, err := l.Append(ev("t")); err != nil {
			t.Fatal(err)
		}
	}
	before := logSize(t, dir)
	sink := &coordinatorSink{got: map[uint64]int{}, limit: ackTo}
	ctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() { defer close(shipped); l.Ship(ctx, sink.send) }()
	waitAcked(t, l, ackTo)
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-shipped
	after := logSize(t, dir)
	if after >= before {
		t.Errorf("file went from %d to %d bytes: no compaction", before, after)
	}
	kept, err := l.Read(func(e *api.AuditEvent) bool { return e.Seq > ackTo }, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != n-ackTo || kept[0].Seq != ackTo+1 || kept[len(kept)-1].Seq != n {
		t.Fatalf("after compaction the file holds %d unacknowledged events, want all %d", len(kept), n-ackTo)
	}
	// And shipping goes on from where it stopped.
	sink.mu.Lock()
	sink.limit = 0
	sink.mu.Unlock()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go l.Ship(ctx, sink.send)
	waitAcked(t, l, n)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for s := uint64(1); s <= n; s++ {
		if sink.got[s] != 1 {
			t.Fatalf("event %d reached the coordinator %d times", s, sink.got[s])
		}
	}
}

// A compaction cut short by a crash leaves its unfinished copy, which the
// next Open removes; the log itself is whole.
func TestUnfinishedCompactionIsDiscarded(t *testing.T) {
	dir := t.TempDir()
	l := openWith(t, dir, "a", "b")
	l.Close()
	next := filepath.Join(dir, "audit.jsonl.next")
	if err := os.WriteFile(next, []byte(`{"seq":1,"tool":"a"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, all := reopen(t, dir)
	if len(all) != 2 || all[1].Tool != "b" {
		t.Fatalf("after an unfinished compaction the log reads %+v", all)
	}
	if _, err := os.Stat(next); !os.IsNotExist(err) {
		t.Errorf("unfinished copy left behind: %v", err)
	}
}
