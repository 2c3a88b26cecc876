package mcp

import (
	"fmt"
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
