package coordinator_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// ehrOwnedByServers lets only nodes tagged tag:server give a service
// tag:ehr, and grants the clinicians tag:ehr services.
const ehrOwnedByServers = `{
  "groups": { "group:clinical": ["node:laptop"], "group:admins": ["node:root"] },
  "tagOwners": { "tag:ehr": ["tag:server"], "tag:server": ["group:admins"] },
  "grants": [ { "src": ["group:clinical"], "dst": ["tag:ehr"], "tools": ["read_*"] } ],
}`

// ehrOwnedByRogueToo also lets node rogue use tag:ehr.
const ehrOwnedByRogueToo = `{
  "groups": { "group:clinical": ["node:laptop"], "group:admins": ["node:root"] },
  "tagOwners": { "tag:ehr": ["tag:server", "node:rogue"], "tag:server": ["group:admins"] },
  "grants": [ { "src": ["group:clinical"], "dst": ["tag:ehr"], "tools": ["read_*"] } ],
}`

// TestServiceTagTheNodeDoesNotOwnIsRefused: under a policy, an enrolled
// node cannot publish a service with a tag that tagOwners does not let it
// use, and the refusal says what an admin would add; a node the owners
// name publishes it and the callers granted the tag get it.
func TestServiceTagTheNodeDoesNotOwnIsRefused(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	l.apply(ehrOwnedByServers)
	server, rogue, laptop := l.start("server", "tag:server"), l.start("rogue", "tag:kiosk"), l.start("laptop")

	err := rogue.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "fake", Tags: []string{"tag:ehr"}}})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict {
		t.Fatalf("rogue publishing a tag:ehr service: %v; want HTTP 409", err)
	}
	for _, want := range []string{`service "fake" may not carry tag:ehr`, `node "rogue"`, `add "node:rogue" (or one of its tags: tag:kiosk) to tagOwners["tag:ehr"]`, "without tag:ehr"} {
		if !strings.Contains(se.Msg, want) {
			t.Errorf("refusal %q lacks %q", se.Msg, want)
		}
	}
	if strings.Contains(se.Msg, "tag:server") {
		t.Errorf("refusal %q tells the node who owns the tag", se.Msg)
	}

	if err := server.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "ehr", Tags: []string{"tag:ehr"}}}); err != nil {
		t.Fatalf("a node tagged tag:server publishing a tag:ehr service: %v", err)
	}
	l.waitFor("the laptop to get ehr", func() bool { return catalogOf(laptop) == "ehr@server[tag:ehr]" })
	if got := peersOf(laptop); got != "server" {
		t.Errorf("laptop's peers: %q, want server alone", got)
	}
	svcs, err := m.Admin.Services(l.ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "ehr" {
		t.Errorf("admin's service list: %+v (%v); want ehr alone", svcs, err)
	}
}

// TestServiceTagCountsOnlyWhileItsNodeOwnsIt: a tag published before any
// policy (when every tag is accepted), or whose ownership a later policy
// drops, is ignored by peers, catalogs and the policy bundle, without the
// node publishing again; a policy that grants ownership brings it back.
func TestServiceTagCountsOnlyWhileItsNodeOwnsIt(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	server, rogue, laptop := l.start("server", "tag:server"), l.start("rogue"), l.start("laptop")
	fake := []api.ServiceSpec{{Name: "fake", Tags: []string{"tag:ehr"}}}
	if err := rogue.Client.SetServices(l.ctx, fake); err != nil {
		t.Fatalf("open mesh: publishing a tagged service: %v", err)
	}
	if err := server.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "ehr", Tags: []string{"tag:ehr"}}}); err != nil {
		t.Fatal(err)
	}

	check := func(v uint64, catalog, peers string, rogueGrants int, roguePeers string) {
		t.Helper()
		l.waitPolicy(laptop, v)
		l.waitPolicy(rogue, v)
		if got := catalogOf(laptop); got != catalog {
			t.Errorf("policy v%d: laptop's catalog %q, want %q", v, got, catalog)
		}
		if got := peersOf(laptop); got != peers {
			t.Errorf("policy v%d: laptop's peers %q, want %q", v, got, peers)
		}
		if got := grantsFor(t, rogue); got != rogueGrants {
			t.Errorf("policy v%d: rogue's policy bundle holds %d grants, want %d", v, got, rogueGrants)
		}
		if got := peersOf(rogue); got != roguePeers {
			t.Errorf("policy v%d: rogue's peers %q, want %q", v, got, roguePeers)
		}
	}

	v1 := l.apply(ehrOwnedByServers)
	check(v1, "ehr@server[tag:ehr]", "server", 0, "")
	explain, err := m.Admin.ExplainPolicy(l.ctx, api.ExplainRequest{Src: "node:laptop", Dst: "svc:fake", Name: "read_chart"})
	if err != nil || explain.Allow {
		t.Errorf("explain laptop -> fake under v%d: %+v (%v); want deny", v1, explain, err)
	}
	// The rogue sending its set again (as on every reconnection) is not
	// refused for a tag the coordinator already holds; it still counts
	// for nothing.
	if err := rogue.Client.SetServices(l.ctx, fake); err != nil {
		t.Errorf("rogue sending its unchanged set again: %v", err)
	}

	v2 := l.apply(ehrOwnedByRogueToo)
	check(v2, "ehr@server[tag:ehr] fake@rogue[tag:ehr]", "rogue server", 1, "laptop")

	v3 := l.apply(ehrOwnedByServers)
	check(v3, "ehr@server[tag:ehr]", "server", 0, "")

	// The admin who applies a policy is told which tags it leaves
	// without effect, and only those.
	resp, err := m.Admin.ApplyPolicy(l.ctx, api.PolicySource{Filename: "acl.hujson", Source: []byte(ehrOwnedByServers)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `"fake"`) || !strings.Contains(resp.Warnings[0], `"rogue"`) || !strings.Contains(resp.Warnings[0], "tag:ehr") {
		t.Errorf("apply's warnings: %q; want one about fake's tag:ehr on rogue", resp.Warnings)
	}
	resp, err = m.Admin.ApplyPolicy(l.ctx, api.PolicySource{Filename: "acl.hujson", Source: []byte(ehrOwnedByRogueToo)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 0 {
		t.Errorf("apply's warnings when every tag is owned: %q", resp.Warnings)
	}
}
