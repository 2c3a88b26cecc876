package mcp

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIdleSessionsAreForgottenWhenTheTableGrows: clients that never send
// DELETE cannot grow the session table without bound.
func TestIdleSessionsAreForgottenWhenTheTableGrows(t *testing.T) {
	svc := &service{sessions: map[string]*session{}}
	old := time.Now().Add(-2 * sessionIdle).UnixNano()
	for i := range sweepAbove + 10 {
		s := &session{owner: "spiffe://td/node/a"}
		s.touch()
		if i%2 == 0 {
			s.lastUsed.Store(old)
		}
		svc.sessions[fmt.Sprint(i)] = s
	}
	svc.sweepLocked()
	if n := len(svc.sessions); n != (sweepAbove+10)/2 {
		t.Fatalf("%d sessions left, want the %d recently used", n, (sweepAbove+10)/2)
	}
	for id, s := range svc.sessions {
		if s.lastUsed.Load() == old {
			t.Fatalf("idle session %s kept", id)
		}
	}
	// A small table is left alone, idle or not.
	small := &service{sessions: map[string]*session{"x": {}}}
	small.sweepLocked()
	if len(small.sessions) != 1 {
		t.Fatal("a small table was swept")
	}
}

// TestTaskAugmentedCallsAreRefused: until tasks are bound to identities, a
// call that would create one is refused before it reaches the upstream.
func TestTaskAugmentedCallsAreRefused(t *testing.T) {
	msgs, _, err := parseBody([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"task":{"ttl":60000}}}`))
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	pol := mustPolicy(t, `{"grants":[{"src":["*"],"dst":["svc:s"],"tools":["echo"]}]}`)
	d := decider{pol: pol, reach: true, svc: &service{Service: Service{Name: "s"}}, caller: Caller{ID: "spiffe://td/node/a"}}
	d.svc.dst.Name = "s"
	v := d.decide(m)
	if v.allow || !strings.Contains(v.reason, "task-augmented") {
		t.Fatalf("verdict %+v", v)
	}
}
