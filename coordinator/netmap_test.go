package coordinator_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestChangesReachOnlyTheNodesThatSeeThem: under a policy, a node that
// joins or moves is sent to the nodes that see it and to no other; those
// hear nothing, and their next delta still applies to the version they hold.
func TestChangesReachOnlyTheNodesThatSeeThem(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var runs sync.WaitGroup
	t.Cleanup(func() { cancel(); runs.Wait() })
	src := `{"grants": [{"src": ["*"], "dst": ["svc:hub", "svc:late"], "tools": ["*"]}]}`
	if _, err := m.Admin.ApplyPolicy(ctx, api.PolicySource{Filename: "p.hujson", Source: []byte(src)}); err != nil {
		t.Fatal(err)
	}
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Reusable: true})
	start := func(name, service string) *meshtest.LightNode {
		t.Helper()
		l, err := meshtest.EnrollLight(ctx, m.URL, tok, name)
		if err != nil {
			t.Fatal(err)
		}
		if service != "" {
			if err := l.Client.SetServices(ctx, []api.ServiceSpec{{Name: service}}); err != nil {
				t.Fatal(err)
			}
		}
		runs.Add(1)
		go func() { defer runs.Done(); defer l.Client.Close(); _ = l.Run(ctx) }()
		return l
	}
	hub := start("hub", "hub")
	a := start("a", "")
	if err := a.WaitPeerCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The client counts a message just after applying it.
	waitMessages := func(l *meshtest.LightNode, n uint64) {
		t.Helper()
		for {
			if msgs, _ := l.Client.Stats(); msgs >= n {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s never counted %d messages", l.Name, n)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitMessages(a, 1)
	msgs0, _ := a.Client.Stats()
	held := a.Version()

	// c joins and moves; only the hub may see it.
	c := start("c", "")
	if err := c.Client.SetEndpoint(ctx, api.EndpointInfo{Advertise: "127.0.0.1:10"}); err != nil {
		t.Fatal(err)
	}
	for {
		if nm := hub.Netmap(); nm != nil && nm.Peers["c"].Endpoint.String() == "127.0.0.1:10" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the hub never saw c move")
		case <-hub.Updated():
		}
	}
	// A delta would arrive within milliseconds; give it ample time.
	time.Sleep(300 * time.Millisecond)
	if msgs, _ := a.Client.Stats(); msgs != msgs0 {
		t.Fatalf("a was sent %d messages for changes to a node it cannot see", msgs-msgs0)
	}

	// c publishes a service a may call: a gets c, as a delta on what it held.
	if err := c.Client.SetServices(ctx, []api.ServiceSpec{{Name: "late"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitPeerCount(ctx, 2); err != nil {
		t.Fatal(err)
	}
	waitMessages(a, msgs0+1)
	last := a.Last()
	if msgs, _ := a.Client.Stats(); msgs != msgs0+1 || last.Full || last.From != held {
		t.Fatalf("a got c in %d messages, the last full=%v from v%d; want one delta from v%d", msgs-msgs0, last.Full, last.From, held)
	}
}
