package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestAuditReachesCoordinatorAcrossAnOutage: events recorded while the
// coordinator is down are kept on the node (across a node restart too) and
// arrive once it is back, none lost and none twice.
func TestAuditReachesCoordinatorAcrossAnOutage(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	srv := m.AddNode("ehr-server")
	record := func(n *nodeT, i int) {
		t.Helper()
		err := n.RecordAudit(api.AuditEvent{Time: time.Now(), Caller: "spiffe://test.mcpmesh/node/x", Service: "ehr",
			Method: "tools/call", Tool: fmt.Sprintf("tool-%02d", i), Decision: "deny", Reason: "no grant matches (default deny)"})
		if err != nil {
			t.Fatal(err)
		}
	}
	record(srv, 0)
	m.StopCoordinator()
	for i := 1; i <= 5; i++ {
		record(srv, i)
	}
	m.StopNode("ehr-server")
	srv, err := m.StartNode("ehr-server", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := 6; i <= 9; i++ {
		record(srv, i)
	}
	m.StartCoordinator()
	var evs []api.AuditEvent
	deadline := time.Now().Add(40 * time.Second)
	for {
		evs, err = m.Admin.Audit(context.Background(), api.AuditQuery{Service: "ehr"})
		if err == nil && len(evs) >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator has %d of 10 events (err %v)", len(evs), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	seen := map[string]int{}
	for _, e := range evs {
		seen[e.Tool]++
		if e.Node != "ehr-server" {
			t.Errorf("event attributed to %q", e.Node)
		}
	}
	for i := 0; i <= 9; i++ {
		if n := seen[fmt.Sprintf("tool-%02d", i)]; n != 1 {
			t.Errorf("tool-%02d stored %d times", i, n)
		}
	}
	// Filters work.
	if got, _ := m.Admin.Audit(context.Background(), api.AuditQuery{Tool: "tool-03", Decision: "deny"}); len(got) != 1 {
		t.Errorf("filter by tool and decision: %d events", len(got))
	}
	if got, _ := m.Admin.Audit(context.Background(), api.AuditQuery{Decision: "allow"}); len(got) != 0 {
		t.Errorf("filter by decision allow: %d events", len(got))
	}
}
