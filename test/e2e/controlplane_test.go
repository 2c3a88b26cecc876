package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// lightMesh enrolls n lightweight nodes, starts their streams and waits for
// each to hold wantPeers peers (-1: all the others, as in an open mesh).
func lightMesh(t *testing.T, m *meshtest.Mesh, n, wantPeers int) []*meshtest.LightNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Reusable: true})
	var out []*meshtest.LightNode
	for i := 0; i < n; i++ {
		l, err := meshtest.EnrollLight(ctx, m.URL, tok, fmt.Sprintf("light-%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Client.Close)
		out = append(out, l)
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.Run(ctx) }()
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if wantPeers < 0 {
		wantPeers = n - 1
	}
	for _, l := range out {
		if err := l.WaitPeerCount(wctx, wantPeers); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// joinCost enrolls one more node into a mesh of size n and returns the
// bytes that an existing node received for it, and the size of a full map.
func joinCost(t *testing.T, n int) (delta, full uint64) {
	m := meshtest.New(t, meshtest.Options{})
	nodes := lightMesh(t, m, n, -1)
	watcher := nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client counts a message just after applying it, so a node that
	// shows its peers may not have counted the message that brought the
	// last one: read the counters once they have held still for 50 ms.
	settled := func() (uint64, uint64) {
		msgs, bytes := watcher.Client.Stats()
		for {
			select {
			case <-ctx.Done():
				t.Fatal("the watcher's counters never settled")
			case <-time.After(50 * time.Millisecond):
			}
			m, b := watcher.Client.Stats()
			if m == msgs && b == bytes {
				return msgs, bytes
			}
			msgs, bytes = m, b
		}
	}
	msgs0, bytes0 := settled()
	fullBytes := bytes0
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	if _, err := meshtest.EnrollLight(ctx, m.URL, tok, "joiner-xyz"); err != nil {
		t.Fatal(err)
	}
	if err := watcher.WaitPeerCount(ctx, n); err != nil {
		t.Fatal(err)
	}
	msgs1, bytes1 := settled()
	if msgs1-msgs0 != 1 {
		t.Fatalf("one join sent %d messages to a peer, want 1", msgs1-msgs0)
	}
	if last := watcher.Last(); last.Full || len(last.Peers) != 1 || last.Peers[0].Name != "joiner-xyz" {
		t.Fatalf("the join arrived as %+v, want a delta naming only the joiner", last)
	}
	return bytes1 - bytes0, fullBytes
}

// TestOneJoinCostsEachPeerConstantBytes: one node joining sends every other
// node one small delta whose size does not grow with the mesh.
func TestOneJoinCostsEachPeerConstantBytes(t *testing.T) {
	small, smallFull := joinCost(t, 4)
	large, largeFull := joinCost(t, 64)
	t.Logf("join delta: %d bytes at 4 nodes, %d bytes at 64 nodes (full maps %d and %d bytes)", small, large, smallFull, largeFull)
	if largeFull < 8*smallFull {
		t.Fatalf("full map did not grow with the mesh (%d vs %d): the test measures nothing", largeFull, smallFull)
	}
	// Allow a few bytes for longer numbers (versions, addresses, times).
	if large > small+16 || small > large+16 {
		t.Fatalf("a join costs a peer %d bytes at 64 nodes but %d at 4: it grows with the mesh", large, small)
	}
}

// TestReconnectingNodeGetsDeltasSinceItsVersion: a node whose stream broke
// says which version it holds and receives only what changed meanwhile.
func TestReconnectingNodeGetsDeltasSinceItsVersion(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Reusable: true})
	ctx := context.Background()
	var ls []*meshtest.LightNode
	for _, name := range []string{"a", "b", "c"} {
		l, err := meshtest.EnrollLight(ctx, m.URL, tok, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Client.Close)
		ls = append(ls, l)
	}
	watcher := ls[0]
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = watcher.Run(runCtx) }()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := watcher.WaitPeerCount(wctx, 2); err != nil {
		t.Fatal(err)
	}
	if !watcher.Last().Full {
		t.Fatal("the first message of a new node is not a full map")
	}
	stop()
	<-done
	held := watcher.Version()

	// While it is away: one node joins, one is revoked.
	if _, err := meshtest.EnrollLight(ctx, m.URL, tok, "d"); err != nil {
		t.Fatal(err)
	}
	if err := m.Admin.Revoke(ctx, "b"); err != nil {
		t.Fatal(err)
	}

	runCtx, stop = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { defer close(done); _ = watcher.Run(runCtx) }()
	defer func() { stop(); <-done }()
	for watcher.Version() == held {
		if wctx.Err() != nil {
			t.Fatal("no message after reconnecting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	last := watcher.Last()
	if last.Full || last.From != held {
		t.Fatalf("reconnect got full=%v from=%d, want a delta from v%d", last.Full, last.From, held)
	}
	if len(last.Peers) != 1 || last.Peers[0].Name != "d" || len(last.Removed) != 1 || last.Removed[0] != "b" {
		t.Fatalf("catch-up delta: peers %+v removed %v; want d added and b removed", last.Peers, last.Removed)
	}
	names := watcher.Netmap().SortedPeers()
	if len(names) != 2 || names[0].Name != "c" || names[1].Name != "d" {
		t.Fatalf("view after catch-up: %+v", names)
	}
}
