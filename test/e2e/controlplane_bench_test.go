package e2e

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// BenchmarkControlPlane runs one coordinator with N lightweight nodes
// (real enrollment, real mTLS netmap streams, real signature checks, no
// tunnels) in this process and reports: time to enroll all, time for one
// join to reach every peer and the bytes it costs each, time for a policy
// change to reach every node, and the process's peak RSS (coordinator and
// all N clients together). N comes from MCPMESH_BENCH_NODES (default 100).
//
//	MCPMESH_BENCH_NODES=1000 go test ./test/e2e -run '^$' -bench ControlPlane -benchtime 1x
//
// One process holds both ends of every stream, so it stops short of 10,000
// nodes (the file descriptor limit) and cannot tell the coordinator's CPU
// and memory from the clients'. scripts/bench-controlplane.sh runs the
// coordinator binary in its own process and the nodes in several
// (test/bench/controlplane); this benchmark stays for quick in-process runs.
func BenchmarkControlPlane(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("MCPMESH_BENCH_NODES")); err == nil && v > 1 {
		n = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := meshtest.New(b, meshtest.Options{})
	// A hub serving one service that every light node may call, so every
	// node has exactly one peer and the policy reaches all of them.
	hub := m.AddNode("hub")
	if _, err := hub.Serve(ctx, localapi.ServeRequest{Name: "hub", Upstream: "http://127.0.0.1:9/mcp"}); err != nil {
		b.Fatal(err)
	}
	pol := func(tools string) api.PolicySource {
		return policySource(`{"grants": [{"src": ["*"], "dst": ["svc:hub", "svc:hub-2"], "tools": [` + tools + `]}]}`)
	}
	if _, err := m.Admin.ApplyPolicy(ctx, pol(`"a"`)); err != nil {
		b.Fatal(err)
	}
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Reusable: true})

	b.ResetTimer()
	// Enroll all, 8 at a time, and start their streams.
	start := time.Now()
	nodes := make([]*meshtest.LightNode, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var firstErr error
	for i := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l, err := meshtest.EnrollLight(ctx, m.URL, tok, fmt.Sprintf("n%05d", i))
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			nodes[i] = l
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	enroll := time.Since(start)
	var runs sync.WaitGroup
	defer func() { cancel(); runs.Wait() }()
	for _, l := range nodes {
		runs.Add(1)
		go func() { defer runs.Done(); _ = l.Run(ctx) }()
	}
	waitAll := func(what string, ok func(*meshtest.LightNode) bool) time.Duration {
		t0 := time.Now()
		deadline := t0.Add(2 * time.Minute)
		for _, l := range nodes {
			for !ok(l) {
				if time.Now().After(deadline) {
					b.Fatalf("%s: %s never got there", what, l.Name)
				}
				time.Sleep(time.Millisecond)
			}
		}
		return time.Since(t0)
	}
	streams := waitAll("first maps", func(l *meshtest.LightNode) bool { nm := l.Netmap(); return nm != nil && len(nm.Peers) == 1 })

	// A policy change that every node must receive.
	_, bytesBefore := nodes[0].Client.Stats()
	v0 := nodes[0].Version()
	t0 := time.Now()
	if _, err := m.Admin.ApplyPolicy(ctx, pol(`"a", "b"`)); err != nil {
		b.Fatal(err)
	}
	policyReach := time.Since(t0) + waitAll("policy change", func(l *meshtest.LightNode) bool { return l.Version() > v0 })
	_, bytesAfter := nodes[0].Client.Stats()

	// One join that every node must see: a second hub service host.
	hub2tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	_, joinBytes0 := nodes[1].Client.Stats()
	t0 = time.Now()
	h2, err := m.StartNode("hub-2", hub2tok)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h2.Serve(ctx, localapi.ServeRequest{Name: "hub-2", Upstream: "http://127.0.0.1:9/mcp"}); err != nil {
		b.Fatal(err)
	}
	joinReach := time.Since(t0) + waitAll("join", func(l *meshtest.LightNode) bool { nm := l.Netmap(); return len(nm.Peers) == 2 })
	_, joinBytes1 := nodes[1].Client.Stats()
	b.StopTimer()

	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(n), "nodes")
	b.ReportMetric(enroll.Seconds(), "enroll-all-s")
	b.ReportMetric(streams.Seconds(), "first-maps-s")
	b.ReportMetric(policyReach.Seconds(), "policy-reach-all-s")
	b.ReportMetric(float64(bytesAfter-bytesBefore), "policy-bytes/node")
	b.ReportMetric(joinReach.Seconds(), "join-reach-all-s")
	b.ReportMetric(float64(joinBytes1-joinBytes0), "join-bytes/node")
	b.ReportMetric(float64(ru.Maxrss)/1024, "process-peak-RSS-MiB")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(0, "ns/op")
}
