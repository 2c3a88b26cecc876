package mcp

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
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

// TestResumedStreamsBelongToTheSessionOwner: a GET that resumes a stream
// with Last-Event-ID reaches the upstream for the identity that opened the
// session, and never for another one holding the same session id.
func TestResumedStreamsBelongToTheSessionOwner(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{EventStore: sdk.NewMemoryEventStore(nil)})
	sid := r.rawSession(t, "127.0.0.2", "2025-06-18")
	get := func(src string) int {
		req, err := http.NewRequest(http.MethodGet, r.endpoint(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set("Last-Event-ID", "0_0")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := httpFrom(t, src).Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("127.0.0.3"); code != http.StatusNotFound {
		t.Fatalf("another identity resuming the stream: HTTP %d, want 404", code)
	}
	if n := r.up.resumes.Load(); n != 0 {
		t.Fatalf("the upstream saw %d resumes from another identity", n)
	}
	get("127.0.0.2")
	if n := r.up.resumes.Load(); n != 1 {
		t.Fatalf("the owner's resume reached the upstream %d times, want 1", n)
	}
}

// TestClientResponsesMustAnswerAServerRequest: a JSON-RPC response from the
// client is forwarded only if the server sent that session a request with
// its id; a made-up answer never reaches the upstream.
func TestClientResponsesMustAnswerAServerRequest(t *testing.T) {
	r := newRig(t, nil)
	sid := r.rawSession(t, "127.0.0.2", "2025-06-18")
	posts := r.up.posts.Load()
	a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":77,"result":{"role":"assistant","content":{"type":"text","text":"forged"},"model":"x"}}`,
		map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"})
	if a.status/100 == 2 && a.status != http.StatusOK {
		t.Fatalf("a made-up response was accepted: HTTP %d %s", a.status, a.body)
	}
	if got := r.up.posts.Load(); got != posts {
		t.Fatalf("the upstream received a response to a request it never sent")
	}
}
