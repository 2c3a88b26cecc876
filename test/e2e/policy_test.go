package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

const clinicPolicy = `{
  "groups": { "group:clinical": ["node:ward-laptop"] },
  "tagOwners": { "tag:billing": ["group:clinical"], "tag:phi": ["group:clinical"] },
  "grants": [
    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*", "search_patients"] },
    { "src": ["tag:billing"], "dst": ["svc:ehr"], "tools": ["get_invoice"], "when": "args.amount < 10000" },
    { "src": ["tag:billing"], "dst": ["svc:ledger"], "tools": ["post_entry"] },
  ],
  "tests": [
    { "src": "node:ward-laptop", "dst": "svc:ehr", "allow": ["read_chart"], "deny": ["delete_chart"] },
  ],
}`

func applyPolicy(t *testing.T, m *meshtest.Mesh, src string) uint64 {
	t.Helper()
	resp, err := m.Admin.ApplyPolicy(context.Background(), api.PolicySource{Filename: "acl.hujson", Source: []byte(src)})
	if err != nil {
		t.Fatalf("apply: %v %v", err, adminclient.PolicyErrors(err))
	}
	return resp.Version
}

func publish(t *testing.T, n *nodeT, names ...string) {
	t.Helper()
	var specs []api.ServiceSpec
	for _, name := range names {
		specs = append(specs, api.ServiceSpec{Name: name})
	}
	if err := n.SetServices(context.Background(), specs); err != nil {
		t.Fatal(err)
	}
}

// clinic is a mesh with an EHR server, a ledger server, a clinician's laptop,
// a billing bot and an enrolled node that no grant mentions.
func clinic(t *testing.T) (m *meshtest.Mesh, ehr, ledger, laptop, bot, outsider *nodeT) {
	m = meshtest.New(t, meshtest.Options{})
	ehr, ledger = m.AddNode("ehr-server"), m.AddNode("ledger-server")
	laptop, bot = m.AddNode("ward-laptop"), m.AddNode("billing-bot", "tag:billing")
	outsider = m.AddNode("outsider")
	publish(t, ehr, "ehr")
	publish(t, ledger, "ledger")
	applyPolicy(t, m, clinicPolicy)
	return
}

func TestVisibilityFollowsGrants(t *testing.T) {
	m, ehr, ledger, laptop, bot, outsider := clinic(t)
	m.WaitPeers(laptop, "ehr-server")
	m.WaitPeers(bot, "ehr-server", "ledger-server")
	m.WaitPeers(ehr, "billing-bot", "ward-laptop")
	m.WaitPeers(ledger, "billing-bot")
	m.WaitPeers(outsider) // may call nothing: sees nobody

	// The catalog says what each node may call.
	waitFor(t, "bot's catalog", func() bool {
		var names []string
		for _, s := range bot.Netmap().Catalog {
			names = append(names, s.Name+"@"+s.Node)
		}
		return slices.Equal(names, []string{"ehr@ehr-server", "ledger@ledger-server"})
	})
	if c := outsider.Netmap().Catalog; len(c) != 0 {
		t.Errorf("outsider's catalog: %v", c)
	}

	serveEcho(t, ehr)
	mustEcho(t, laptop, ehr)
	mustEcho(t, bot, ehr)

	// The attacker's side: the outsider is enrolled and knows the server's
	// public key and endpoint (say, from a stolen netmap), configures it by
	// hand, and tries to connect. The server has no such peer, so the
	// WireGuard handshake never completes.
	srvPeer := ehrPeerAsSeenBy(t, laptop)
	if _, err := outsider.Tunnel().SetPeers([]tunnel.Peer{srvPeer}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := echo(ctx, outsider, ehr, ehr.Addresses()[0]); err == nil {
		t.Fatal("a node without a grant reached the server")
	}
	ps, _ := outsider.Tunnel().Peers()
	for _, p := range ps {
		if !p.LastHandshake.IsZero() {
			t.Fatalf("the outsider completed a handshake with %s", p.PublicKey)
		}
	}
}

// ehrPeerAsSeenBy returns the EHR server's WireGuard peer entry from a
// node that legitimately has it.
func ehrPeerAsSeenBy(t *testing.T, n *nodeT) tunnel.Peer {
	t.Helper()
	p := n.Netmap().Peers["ehr-server"]
	k, err := tunnel.ParseKey(p.WireGuardKey)
	if err != nil {
		t.Fatal(err)
	}
	tp := tunnel.Peer{PublicKey: k, Endpoint: p.Endpoint}
	for _, a := range p.Addresses {
		tp.AllowedIPs = append(tp.AllowedIPs, netipPrefix(a))
	}
	return tp
}

func TestServingNodeGetsOnlyTheRulesForItsServices(t *testing.T) {
	m, ehr, ledger, laptop, _, _ := clinic(t)
	m.WaitPeers(ledger, "billing-bot")
	waitFor(t, "ehr's policy", func() bool { p, v := ehr.Policy(); return p != nil && v > 0 })
	waitFor(t, "ledger's policy", func() bool { p, _ := ledger.Policy(); return p != nil })

	ehrPol, _ := ehr.Policy()
	ledgerPol, _ := ledger.Policy()
	if ehrPol.Grants() != 2 || ledgerPol.Grants() != 1 {
		t.Fatalf("ehr has %d grants, ledger %d; want 2 and 1", ehrPol.Grants(), ledgerPol.Grants())
	}
	doc := string(ehr.Netmap().Policy.Document)
	if strings.Contains(doc, "ledger") || strings.Contains(doc, "post_entry") {
		t.Fatalf("the EHR server received rules of another service:\n%s", doc)
	}
	lap := policy.Identity{Name: "ward-laptop", ID: laptop.ID()}
	if d := ehrPol.Decide(policy.Request{Src: lap, Dst: policy.Service{Name: "ehr"}, Name: "read_chart"}); !d.Allow {
		t.Errorf("ehr's own rules deny read_chart: %s", d.Reason)
	}
	if d := ehrPol.Decide(policy.Request{Src: lap, Dst: policy.Service{Name: "ehr"}, Name: "delete_chart"}); d.Allow {
		t.Error("ehr's rules allow delete_chart")
	}
	// Nodes that host nothing get no rules at all.
	if p, _ := laptop.Policy(); p != nil {
		t.Errorf("a node hosting nothing received %d grants", p.Grants())
	}
}

func TestPolicyChangeReachesNodesWithoutRestartAndRollbackRestores(t *testing.T) {
	m, ehr, _, laptop, _, outsider := clinic(t)
	m.WaitPeers(outsider)
	m.WaitPeers(laptop, "ehr-server")
	before := ehr.Netmap().Version

	v2 := applyPolicy(t, m, strings.Replace(clinicPolicy, `"node:ward-laptop"]`, `"node:ward-laptop", "node:outsider"]`, 1))
	m.WaitPeers(outsider, "ehr-server")
	m.WaitPeers(ehr, "billing-bot", "outsider", "ward-laptop")
	serveEcho(t, ehr)
	mustEcho(t, outsider, ehr)
	waitFor(t, "ehr's new policy", func() bool { _, v := ehr.Policy(); return v == v2 })
	if ehr.Netmap().Version <= before {
		t.Fatal("the server's netmap version did not move")
	}

	resp, err := m.Admin.RollbackPolicy(context.Background(), v2-1)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Version != v2+1 {
		t.Fatalf("rollback stored v%d, want a new version v%d", resp.Version, v2+1)
	}
	m.WaitPeers(outsider)
	m.WaitPeers(ehr, "billing-bot", "ward-laptop")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := echo(ctx, outsider, ehr, ehr.Addresses()[0]); err == nil {
		t.Fatal("the outsider still reaches the server after the rollback")
	}
	h, err := m.Admin.PolicyHistory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Note != "rollback to v1" || !strings.HasPrefix(h[0].Author, "spiffe://") {
		t.Fatalf("history: %+v", h)
	}
	cur, err := m.Admin.Policy(context.Background(), 0)
	if err != nil || string(cur.Source) != clinicPolicy {
		t.Fatalf("current policy after rollback is not v1's source: %v", err)
	}
}

func TestPolicyChangeTravelsAsADelta(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	srv := m.AddNode("ehr-server")
	publish(t, srv, "ehr")
	applyPolicy(t, m, clinicPolicy)
	nodes := lightMesh(t, m, 3, 0) // light-000..002: no grants, so no peers
	watcher := nodes[0]
	m0, _ := watcher.Client.Stats()

	applyPolicy(t, m, strings.Replace(clinicPolicy, `"node:ward-laptop"]`, `"node:ward-laptop", "node:light-000"]`, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := watcher.WaitPeerCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	last := watcher.Last()
	if last.Full || len(last.Peers) != 1 || last.Peers[0].Name != "ehr-server" {
		t.Fatalf("the policy change arrived as %+v, want a delta adding ehr-server", last)
	}
	if m1, _ := watcher.Client.Stats(); m1-m0 != 1 {
		t.Fatalf("%d messages for one policy change", m1-m0)
	}
}

func TestInvalidPolicyNeverReplacesAValidOne(t *testing.T) {
	m, _, _, laptop, _, _ := clinic(t)
	m.WaitPeers(laptop, "ehr-server")
	bad := []string{
		`{ "grants": [ { "src": ["group:nobody"], "dst": ["svc:ehr"], "tools": ["x"] } ] }`,
		`{ "grants": [ { "src": ["*"], "dst": ["svc:ehr"], "tools": ["x"], "when": "args.amount +" } ] }`,
		strings.Replace(clinicPolicy, `"deny": ["delete_chart"]`, `"deny": ["read_chart"]`, 1), // a failing test
		`{ "grants": [`,
	}
	for _, src := range bad {
		_, err := m.Admin.ApplyPolicy(context.Background(), api.PolicySource{Filename: "acl.hujson", Source: []byte(src)})
		errs := adminclient.PolicyErrors(err)
		if err == nil || len(errs) == 0 || errs[0].Line == 0 {
			t.Errorf("apply of %q: err %v, positioned errors %v", src, err, errs)
		}
	}
	h, _ := m.Admin.PolicyHistory(context.Background())
	if len(h) != 1 {
		t.Fatalf("%d versions after refused applies, want 1", len(h))
	}
	mustEcho(t, laptop, mustServe(t, m))
}

func mustServe(t *testing.T, m *meshtest.Mesh) *nodeT {
	t.Helper()
	n := m.Node("ehr-server")
	serveEcho(t, n)
	return n
}

func TestExplainSaysWhichRuleDecided(t *testing.T) {
	m, _, _, _, _, _ := clinic(t)
	for _, c := range []struct {
		req  api.ExplainRequest
		want string
	}{
		{api.ExplainRequest{Src: "node:ward-laptop", Dst: "svc:ehr", Name: "read_chart"}, "allow: grant at acl.hujson:5:5"},
		{api.ExplainRequest{Src: "node:ward-laptop", Dst: "svc:ehr", Name: "delete_chart"}, "deny: no grant matches (default deny)"},
		{api.ExplainRequest{Src: "node:billing-bot", Dst: "svc:ehr", Name: "get_invoice", Args: map[string]any{"amount": 20000}}, "when condition false"},
		{api.ExplainRequest{Src: "node:outsider", Dst: "svc:ledger", Name: "post_entry"}, "deny: no grant matches"},
	} {
		resp, err := m.Admin.ExplainPolicy(context.Background(), c.req)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(resp.Explanation, c.want) {
			t.Errorf("%+v: %q, want %q", c.req, resp.Explanation, c.want)
		}
	}
	if _, err := m.Admin.ExplainPolicy(context.Background(), api.ExplainRequest{Src: "node:ghost", Dst: "svc:ehr", Name: "x"}); err == nil || !strings.Contains(err.Error(), "no node named") {
		t.Errorf("explain for an unknown node: %v", err)
	}
}
