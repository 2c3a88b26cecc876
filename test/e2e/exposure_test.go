package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestExposureReportsAreNamedByTheSenderAndBounded: the coordinator files
// a report under the node its SVID names, whatever the report claims,
// keeps only the latest per node, and refuses an oversized or undated one
// without losing the report it has.
func TestExposureReportsAreNamedByTheSenderAndBounded(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Reusable: true})
	l, err := meshtest.EnrollLight(ctx, m.URL, tok, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Client.Close()

	finding := api.ExposureFinding{Address: "0.0.0.0:9100", Transport: "streamable-http", URL: "http://127.0.0.1:9100/mcp", ServerName: "shadow"}
	first := api.ExposureReport{Node: "someone-else", ScannedAt: time.Now().UTC(), Findings: []api.ExposureFinding{finding}}
	if err := l.Client.ReportExposure(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := first
	second.ScannedAt = first.ScannedAt.Add(time.Minute)
	second.Findings = append(second.Findings, api.ExposureFinding{Address: "[::]:9200", Transport: "sse", URL: "http://[::1]:9200/sse"})
	if err := l.Client.ReportExposure(ctx, second); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []api.ExposureReport{
		{ScannedAt: time.Now(), Findings: make([]api.ExposureFinding, api.MaxExposureFindings+1)},
		{Findings: []api.ExposureFinding{finding}},
	} {
		if err := l.Client.ReportExposure(ctx, bad); err == nil {
			t.Errorf("a report with %d findings and scan time %v was accepted", len(bad.Findings), bad.ScannedAt)
		}
	}
	reps, err := m.Admin.Exposure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Node != "laptop" || len(reps[0].Findings) != 2 || !reps[0].ScannedAt.Equal(second.ScannedAt) {
		t.Fatalf("exposure reports = %+v, want only laptop's second report", reps)
	}
	if f := reps[0].Findings[0]; !f.Exposed() || f.ServerName != "shadow" {
		t.Errorf("finding = %+v", f)
	}

}
