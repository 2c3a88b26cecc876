package coordinator_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestRevokedNodesServiceNameGoesToTheNextPublisher: revoking a node
// releases the names it published, so another node can publish one of
// them, and the callers' catalogs then point at the new node.
func TestRevokedNodesServiceNameGoesToTheNextPublisher(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	l.apply(`{"grants": [{"src": ["node:laptop"], "dst": ["svc:ehr"], "tools": ["*"]}]}`)
	old, next, laptop := l.start("old"), l.start("next"), l.start("laptop")
	ehr := []api.ServiceSpec{{Name: "ehr"}}
	if err := old.Client.SetServices(l.ctx, ehr); err != nil {
		t.Fatal(err)
	}
	l.waitFor("the laptop to get ehr on old", func() bool { return catalogOf(laptop) == "ehr@old[]" && peersOf(laptop) == "old" })
	var se *api.StatusError
	if err := next.Client.SetServices(l.ctx, ehr); !errors.As(err, &se) || se.Code != http.StatusConflict {
		t.Fatalf("next publishing ehr while old holds it: %v; want HTTP 409", err)
	}

	if err := m.Admin.Revoke(l.ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if err := next.Client.SetServices(l.ctx, ehr); err != nil {
		t.Fatalf("next publishing ehr after old was revoked: %v", err)
	}
	l.waitFor("the laptop to get ehr on next", func() bool { return catalogOf(laptop) == "ehr@next[]" && peersOf(laptop) == "next" })
	svcs, err := m.Admin.Services(l.ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "ehr" || svcs[0].Node != "next" {
		t.Fatalf("admin's service list: %+v (%v); want ehr on next", svcs, err)
	}

	// And after a restart, from the store alone.
	m.StopCoordinator()
	m.StartCoordinator()
	svcs, err = m.Admin.Services(l.ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Node != "next" {
		t.Fatalf("admin's service list after a restart: %+v (%v); want ehr on next", svcs, err)
	}
}
