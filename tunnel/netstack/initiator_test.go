package netstack

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// retryCounter counts wireguard-go's "handshake did not complete, retrying"
// lines: each is a 5 s stall of a new pair.
type retryCounter struct {
	n atomic.Int32
}

func (r *retryCounter) Enabled(context.Context, slog.Level) bool { return true }
func (r *retryCounter) Handle(_ context.Context, rec slog.Record) error {
	if strings.Contains(rec.Message, "Handshake did not complete") {
		r.n.Add(1)
	}
	return nil
}
func (r *retryCounter) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *retryCounter) WithGroup(string) slog.Handler      { return r }

// TestPeersAddedAtOnceHandshakeWithoutRetry: two nodes that learn of each
// other at the same moment, both with keepalives, get a session on the
// first try instead of crossing initiations and waiting out the 5 s retry.
func TestPeersAddedAtOnceHandshakeWithoutRetry(t *testing.T) {
	for round := range 5 {
		var rc retryCounter
		log := slog.New(&rc)
		a, b := newNode(t, 2*round+1, WithLogger(log)), newNode(t, 2*round+2, WithLogger(log))
		pa, pb := a.peer(), b.peer()
		pa.PersistentKeepalive, pb.PersistentKeepalive = 25*time.Second, 25*time.Second
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); mustSetPeers(t, a, pb) }()
		go func() { defer wg.Done(); mustSetPeers(t, b, pa) }()
		wg.Wait()
		deadline := time.Now().Add(12 * time.Second)
		for {
			ps, err := a.Peers()
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) == 1 && !ps[0].LastHandshake.IsZero() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no handshake at all")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if n := rc.n.Load(); n != 0 {
			t.Fatalf("round %d: %d handshake retries: the first initiations crossed or were dropped", round, n)
		}
		a.Close()
		b.Close()
	}
}
