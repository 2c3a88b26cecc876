package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// Operations a driver asks of a client process.
const (
	opEnroll = "enroll" // enroll every node of the process
	opStream = "stream" // start every node's netmap stream
	opArm    = "arm"    // start watching for a condition on every node
	opWait   = "wait"   // report when the armed condition held on all
	opStats  = "stats"  // netmap bytes and messages accepted so far
	opQuit   = "quit"   // stop the streams and exit
)

// Conditions a client can watch for.
const (
	untilNewer = "newer" // a netmap version newer than the one held when armed
	untilPeers = "peers" // exactly Peers peers
)

// request is one line the driver writes to a client's stdin.
type request struct {
	Op    string `json:"op"`
	Until string `json:"until,omitempty"`
	Peers int    `json:"peers,omitempty"`
	// Timeout bounds an enrollment or an armed wait.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// reply is the one line a client writes to stdout for each request.
type reply struct {
	Err   string `json:"err,omitempty"`
	Nodes int    `json:"nodes"`
	// Seconds is how long the operation took in the client (enroll).
	Seconds float64 `json:"seconds,omitempty"`
	// Last is the wall clock (Unix ns) at which the last node met the
	// armed condition; the driver, on the same host, subtracts the time
	// it acted.
	Last int64 `json:"last,omitempty"`
	// Bytes and Messages are the netmap bytes and messages the nodes
	// accepted: in total (stats), or since arming (wait), with the least
	// and most any one node received.
	Bytes    uint64 `json:"bytes"`
	Messages uint64 `json:"messages"`
	MinBytes uint64 `json:"minBytes,omitempty"`
	MaxBytes uint64 `json:"maxBytes,omitempty"`
}

// cond is a condition on one node's view.
type cond func(l *meshtest.LightNode) bool

// condFor builds the condition of an arm request; base is each node's
// version when armed.
func condFor(until string, peers int, base map[*meshtest.LightNode]uint64) (cond, error) {
	switch until {
	case untilNewer:
		return func(l *meshtest.LightNode) bool { return l.Version() > base[l] }, nil
	case untilPeers:
		return func(l *meshtest.LightNode) bool { return peerCount(l) == peers }, nil
	}
	return nil, fmt.Errorf("unknown condition %q", until)
}

// peerCount is the number of peers l holds, -1 before its first map.
func peerCount(l *meshtest.LightNode) int {
	nm := l.Netmap()
	if nm == nil {
		return -1
	}
	return len(nm.Peers)
}

// watch waits, one goroutine per node woken by its updates, until ok holds
// on every node or ctx ends, and returns the wall clock at which the last
// node got there. A node's client counts a message just after applying it,
// so once ok comes to hold watch also waits (briefly) for the count to pass
// what base recorded, so that byte counts read afterwards are complete.
func watch(ctx context.Context, nodes []*meshtest.LightNode, ok cond, base map[*meshtest.LightNode][2]uint64) (time.Time, error) {
	var (
		mu     sync.Mutex
		last   time.Time
		failed []string
		wg     sync.WaitGroup
	)
	for _, l := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			already := ok(l)
			for !ok(l) {
				select {
				case <-ctx.Done():
					mu.Lock()
					failed = append(failed, l.Name)
					mu.Unlock()
					return
				case <-l.Updated():
				}
			}
			now := time.Now()
			for !already && ctx.Err() == nil {
				if m, _ := l.Client.Stats(); m > base[l][0] {
					break
				}
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			if now.After(last) {
				last = now
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return last, fmt.Errorf("%d of %d nodes (%s first) never got there: %w", len(failed), len(nodes), failed[0], ctx.Err())
	}
	return last, nil
}

// byteSpread sums what each node accepted since base, with the extremes.
func byteSpread(nodes []*meshtest.LightNode, base map[*meshtest.LightNode][2]uint64) (msgs, total, lo, hi uint64) {
	for i, l := range nodes {
		m, b := l.Client.Stats()
		m, b = m-base[l][0], b-base[l][1]
		msgs += m
		total += b
		if i == 0 || b < lo {
			lo = b
		}
		hi = max(hi, b)
	}
	return msgs, total, lo, hi
}

// statsOf records each node's counters.
func statsOf(nodes []*meshtest.LightNode) map[*meshtest.LightNode][2]uint64 {
	out := make(map[*meshtest.LightNode][2]uint64, len(nodes))
	for _, l := range nodes {
		m, b := l.Client.Stats()
		out[l] = [2]uint64{m, b}
	}
	return out
}
