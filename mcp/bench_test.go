package mcp

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const benchSessions = 64

// BenchmarkToolsCall measures tools/call through the proxy against direct
// calls to the same upstream in the same run, with 64 concurrent SDK client
// sessions each way. It reports p50/p99 latency, the latency the proxy adds,
// and the throughput ratio (proxy/direct). b.N is the number of calls each
// way; the serial (one session) figures use up to 2000 calls.
//
//	go test -run=NONE -bench=ToolsCall -benchtime=20000x ./mcp/
func BenchmarkToolsCall(b *testing.B) {
	r := newRig(b, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sessions := func(endpoint string) []*sdk.ClientSession {
		hc := httpFrom(b, "127.0.0.2")
		out := make([]*sdk.ClientSession, benchSessions)
		for i := range out {
			c := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "1"}, nil)
			cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, DisableStandaloneSSE: true}, nil)
			if err != nil {
				b.Fatalf("connect %s: %v", endpoint, err)
			}
			b.Cleanup(func() { cs.Close() })
			out[i] = cs
		}
		return out
	}
	direct, proxied := sessions(r.up.url), sessions(r.endpoint())
	params := &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}

	run := func(ss []*sdk.ClientSession, n int) ([]time.Duration, time.Duration) {
		per := max(n/len(ss), 1)
		lat := make([]time.Duration, per*len(ss))
		var wg sync.WaitGroup
		start := time.Now()
		for i, cs := range ss {
			wg.Go(func() {
				for j := range per {
					t0 := time.Now()
					if _, err := cs.CallTool(context.Background(), params); err != nil {
						b.Errorf("call: %v", err)
						return
					}
					lat[i*per+j] = time.Since(t0)
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(lat)
		return lat, elapsed
	}
	pct := func(l []time.Duration, p float64) float64 {
		return float64(l[int(p*float64(len(l)-1))].Microseconds())
	}
	run(direct[:4], 400) // warm up connections and code paths
	run(proxied[:4], 400)
	b.ResetTimer()
	// Unloaded: one session, calls one after another.
	serial := min(b.N, 2000)
	d1, _ := run(direct[:1], serial)
	p1, _ := run(proxied[:1], serial)
	// Loaded: 64 sessions at once, in alternating rounds so that drift on
	// a shared machine (other load, GC state) falls on both sides alike.
	const rounds = 4
	var dl, pl []time.Duration
	var de, pe time.Duration
	for range rounds {
		l, e := run(direct, b.N/rounds)
		dl, de = append(dl, l...), de+e
		l, e = run(proxied, b.N/rounds)
		pl, pe = append(pl, l...), pe+e
	}
	slices.Sort(dl)
	slices.Sort(pl)
	b.StopTimer()
	b.ReportMetric(pct(p1, .50)-pct(d1, .50), "serial-added-p50-µs")
	b.ReportMetric(pct(p1, .99)-pct(d1, .99), "serial-added-p99-µs")
	b.ReportMetric(pct(d1, .50), "serial-direct-p50-µs")
	dRate := float64(len(dl)) / de.Seconds()
	pRate := float64(len(pl)) / pe.Seconds()
	b.ReportMetric(pct(dl, .50), "direct-p50-µs")
	b.ReportMetric(pct(dl, .99), "direct-p99-µs")
	b.ReportMetric(pct(pl, .50), "proxy-p50-µs")
	b.ReportMetric(pct(pl, .99), "proxy-p99-µs")
	b.ReportMetric(pct(pl, .50)-pct(dl, .50), "added-p50-µs")
	b.ReportMetric(pct(pl, .99)-pct(dl, .99), "added-p99-µs")
	b.ReportMetric(dRate, "direct-calls/s")
	b.ReportMetric(pRate, "proxy-calls/s")
	b.ReportMetric(pRate/dRate, "throughput-ratio")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here
}
