package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node/auditlog"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// BenchmarkToolsCallAcrossMesh measures tools/call end to end — the
// agent's node (LocalAPI forwarder, as `mcpmesh connect` uses), userspace
// WireGuard over loopback, the serving node's proxy (policy, audit to disk)
// and the upstream — against direct calls to the same upstream in the same
// run, sequentially and with 64 concurrent sessions. b.N calls each way.
// It runs twice: with the nodes' audit fsynced within 100 ms, as `mcpmesh
// up` runs by default, and with every answer held until its event is
// fsynced (`up --audit-fsync 0`).
//
//	go test ./test/e2e -run '^$' -bench ToolsCallAcrossMesh -benchtime 5000x
func BenchmarkToolsCallAcrossMesh(b *testing.B) {
	b.Run("audit-fsync=100ms", func(b *testing.B) { benchAcrossMesh(b, auditlog.DefaultSyncEvery) })
	b.Run("audit-fsync=each", func(b *testing.B) { benchAcrossMesh(b, 0) })
}

func benchAcrossMesh(b *testing.B, fsyncEvery time.Duration) {
	m := meshtest.New(b, meshtest.Options{AuditFsyncEvery: fsyncEvery})
	up := startEHRB(b)
	srv := m.AddNode("ehr-server")
	if _, err := srv.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up}); err != nil {
		b.Fatal(err)
	}
	laptop := m.AddNode("ward-laptop")
	if _, err := m.Admin.ApplyPolicy(context.Background(), policySource(ehrPolicy)); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if p, _ := srv.Policy(); p != nil && len(laptop.Netmap().Catalog) == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("mesh not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mux := http.NewServeMux()
	mux.Handle("/localapi/v0/mcp/{service}", laptop.MCPForwarder())
	local := httptest.NewServer(mux)
	b.Cleanup(local.Close)

	const sessions = 64
	connect := func(endpoint string) []*sdk.ClientSession {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: sessions}}
		out := make([]*sdk.ClientSession, sessions)
		for i := range out {
			c := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "1"}, nil)
			cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
			if err != nil {
				b.Fatalf("connect %s: %v", endpoint, err)
			}
			b.Cleanup(func() { cs.Close() })
			out[i] = cs
		}
		return out
	}
	direct, mesh := connect(up), connect(local.URL+localapi.MCPPath("ehr"))
	params := &sdk.CallToolParams{Name: "read_chart", Arguments: map[string]any{"patient": "p-1"}}
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
		el := time.Since(start)
		slices.Sort(lat)
		return lat, el
	}
	pct := func(l []time.Duration, p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) }
	run(direct[:4], 200)
	run(mesh[:4], 200)
	b.ResetTimer()
	serial := min(b.N, 2000)
	d1, _ := run(direct[:1], serial)
	m1, _ := run(mesh[:1], serial)
	dl, de := run(direct, b.N)
	ml, me := run(mesh, b.N)
	b.StopTimer()
	b.ReportMetric(pct(d1, .50), "serial-direct-p50-µs")
	b.ReportMetric(pct(m1, .50)-pct(d1, .50), "serial-added-p50-µs")
	b.ReportMetric(pct(m1, .99)-pct(d1, .99), "serial-added-p99-µs")
	b.ReportMetric(float64(len(dl))/de.Seconds(), "direct-calls/s")
	b.ReportMetric(float64(len(ml))/me.Seconds(), "mesh-calls/s")
	b.ReportMetric((float64(len(ml))/me.Seconds())/(float64(len(dl))/de.Seconds()), "throughput-ratio")
	b.ReportMetric(0, "ns/op")
}
