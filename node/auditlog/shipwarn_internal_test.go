package auditlog

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// records keeps the log records at Info and above.
type records struct {
	mu  sync.Mutex
	out []string
}

func (r *records) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }
func (r *records) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.out, "\n")
}

// Shipping that keeps failing is said once at Warn (each failure alone is
// routine, and logged at Debug), and its end at Info.
func TestShipWarnsOnceWhenEventsStopLeaving(t *testing.T) {
	rec := &records{}
	l, err := Open(t.TempDir(), slog.New(rec), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.warnShipAfter = 500 * time.Millisecond
	if err := l.Record(api.AuditEvent{Time: time.Now(), Service: "ehr", Method: "tools/call", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failures, down := 0, true
	send := func(_ context.Context, evs []api.AuditEvent) (uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			failures++
			return 0, errors.New("coordinator unreachable")
		}
		return evs[len(evs)-1].Seq, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); l.Ship(ctx, send) }()
	waitLog := func(want string) {
		t.Helper()
		for !strings.Contains(rec.all(), want) {
			select {
			case <-ctx.Done():
				t.Fatalf("no %q in the log:\n%s", want, rec.all())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitLog("WARN audit events are not reaching the coordinator")
	// One more failed attempt after the warning, which says nothing new.
	mu.Lock()
	seen := failures
	mu.Unlock()
	for {
		mu.Lock()
		n := failures
		if n > seen {
			down = false
		}
		mu.Unlock()
		if n > seen {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Record(api.AuditEvent{Time: time.Now(), Service: "ehr", Method: "tools/call", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	waitLog("INFO audit events reach the coordinator again")
	cancel()
	<-done
	if n := strings.Count(rec.all(), "not reaching"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, rec.all())
	}
}
