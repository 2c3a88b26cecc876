package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// lights runs lightweight nodes (real enrollment and netmap streams, no
// tunnels) against one coordinator until the test ends.
type lights struct {
	t     *testing.T
	ctx   context.Context
	url   string
	admin *adminclient.Client
	runs  sync.WaitGroup
}

func newLights(t *testing.T, url string, admin *adminclient.Client) *lights {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	l := &lights{t: t, ctx: ctx, url: url, admin: admin}
	t.Cleanup(func() { cancel(); l.runs.Wait() })
	return l
}

// start enrolls a node with a fresh token carrying tags and streams its
// netmap.
func (l *lights) start(name string, tags ...string) *meshtest.LightNode {
	l.t.Helper()
	tok, err := l.admin.CreateToken(l.ctx, api.TokenCreateRequest{Tags: tags, TTL: api.Duration(time.Hour)})
	if err != nil {
		l.t.Fatal(err)
	}
	n, err := meshtest.EnrollLight(l.ctx, l.url, tok.Token, name)
	if err != nil {
		l.t.Fatal(err)
	}
	l.runs.Add(1)
	go func() { defer l.runs.Done(); defer n.Client.Close(); _ = n.Run(l.ctx) }()
	return n
}

// apply applies a policy and returns its version.
func (l *lights) apply(src string) uint64 {
	l.t.Helper()
	resp, err := l.admin.ApplyPolicy(l.ctx, api.PolicySource{Filename: "acl.hujson", Source: []byte(src)})
	if err != nil {
		l.t.Fatalf("apply: %v %v", err, adminclient.PolicyErrors(err))
	}
	return resp.Version
}

// waitFor polls cond until it holds.
func (l *lights) waitFor(what string, cond func() bool) {
	l.t.Helper()
	for !cond() {
		select {
		case <-l.ctx.Done():
			l.t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitPolicy waits until n holds policy version v (every node gets the
// version with the change, in the same message as its new peers and
// catalog).
func (l *lights) waitPolicy(n *meshtest.LightNode, v uint64) {
	l.t.Helper()
	l.waitFor(fmt.Sprintf("%s to hold policy v%d", n.Name, v), func() bool {
		nm := n.Netmap()
		return nm != nil && nm.Policy != nil && nm.Policy.Version == v
	})
}

// auditTools counts, by tool, the events of service in the coordinator's
// audit trail.
func (l *lights) auditTools(service string) map[string]int {
	l.t.Helper()
	evs, err := l.admin.Audit(l.ctx, api.AuditQuery{Service: service})
	if err != nil {
		l.t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range evs {
		got[e.Tool]++
	}
	return got
}

// catalogOf describes n's catalog as "name@node[tags] ...".
func catalogOf(n *meshtest.LightNode) string {
	nm := n.Netmap()
	if nm == nil {
		return "<no netmap>"
	}
	var out []string
	for _, s := range nm.Catalog {
		out = append(out, fmt.Sprintf("%s@%s%v", s.Name, s.Node, s.Tags))
	}
	return strings.Join(out, " ")
}

// peersOf lists n's peers by name.
func peersOf(n *meshtest.LightNode) string {
	nm := n.Netmap()
	if nm == nil {
		return "<no netmap>"
	}
	var out []string
	for name := range nm.Peers {
		out = append(out, name)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// grantsFor counts the grants in the policy bundle n enforces.
func grantsFor(t *testing.T, n *meshtest.LightNode) int {
	t.Helper()
	nm := n.Netmap()
	if nm == nil || nm.Policy == nil || len(nm.Policy.Document) == 0 {
		return 0
	}
	var doc struct {
		Grants []json.RawMessage `json:"grants"`
	}
	if err := json.Unmarshal(nm.Policy.Document, &doc); err != nil {
		t.Fatalf("%s's policy bundle: %v", n.Name, err)
	}
	return len(doc.Grants)
}
