package mcp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestIdleSessionsAreForgottenAndGiveBackTheirSlots: clients that never
// send DELETE neither grow the session table without bound nor keep their
// quota taken for good.
func TestIdleSessionsAreForgottenAndGiveBackTheirSlots(t *testing.T) {
	svc := &service{state: &state{sessions: map[string]*session{}, held: map[string]int{}}}
	old := time.Now().Add(-2 * sessionIdle).UnixNano()
	const n = 10
	for i := range n {
		s := &session{owner: "spiffe://td/node/a"}
		s.touch()
		if i%2 == 0 {
			s.lastUsed.Store(old)
		}
		svc.sessions[fmt.Sprint(i)] = s
		svc.held[s.owner]++
	}
	idle := svc.sweepLocked()
	if len(idle) != n/2 || len(svc.sessions) != n/2 {
		t.Fatalf("swept %d, %d sessions left; want %d and %d", len(idle), len(svc.sessions), n/2, n/2)
	}
	for id, s := range svc.sessions {
		if s.lastUsed.Load() == old {
			t.Fatalf("idle session %s kept", id)
		}
	}
	if got := svc.held["spiffe://td/node/a"]; got != n/2 {
		t.Fatalf("the owner still holds %d slots, want %d", got, n/2)
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

// TestOneCallerCannotTakeEverySession: a caller holds at most its quota of
// sessions with a service; others are unaffected, and a session the caller
// ends, or leaves idle, gives its slot back (and is ended upstream too).
func TestOneCallerCannotTakeEverySession(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	const quota = 3
	if err := r.proxy.SetService(Service{Name: "charts", Tags: []string{"tag:phi"}, URL: r.up.url, MaxSessionsPerCaller: quota}); err != nil {
		t.Fatal(err)
	}
	var bobs []string
	for range quota {
		bobs = append(bobs, r.rawSession(t, "127.0.0.3", "2025-06-18"))
	}
	posts := r.up.posts.Load()
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	a := r.post(t, "127.0.0.3", init, nil)
	if m := a.byID(0); m == nil || errCode(m) != CodeDenied || !strings.Contains(errMsg(m), "already holds 3 sessions") {
		t.Fatalf("bob's initialize past his quota: %d %s; want a denial that names the quota", a.status, a.body)
	}
	if got := r.up.posts.Load(); got != posts {
		t.Fatalf("the upstream was asked to open a session past the quota (%d posts)", got-posts)
	}
	// Alice's slots are her own.
	r.rawSession(t, "127.0.0.2", "2025-06-18")

	// Ending a session gives its slot back.
	del, err := http.NewRequest(http.MethodDelete, r.endpoint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	del.Header.Set("Mcp-Session-Id", bobs[0])
	del.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := httpFrom(t, "127.0.0.3").Do(del)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	bobs[0] = r.rawSession(t, "127.0.0.3", "2025-06-18")

	// So does one left idle, and the upstream is told to end it.
	upstreamStatus := func(sid string) int {
		req, err := http.NewRequest(http.MethodPost, r.up.url, strings.NewReader(`{"jsonrpc":"2.0","id":5,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := upstreamStatus(bobs[1]); got != http.StatusOK {
		t.Fatalf("the upstream answers a live session with %d", got)
	}
	svc := r.proxy.service("charts")
	svc.mu.Lock()
	svc.sessions[bobs[1]].lastUsed.Store(time.Now().Add(-2 * sessionIdle).UnixNano())
	svc.mu.Unlock()
	r.rawSession(t, "127.0.0.3", "2025-06-18")
	waitUntil(t, "the idle session to end upstream", func() bool { return upstreamStatus(bobs[1]) == http.StatusNotFound })
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !f(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestSessionInUseIsNeverIdle: a session whose stream is open (a client
// waiting for notifications) is not swept however long it sends nothing,
// when another caller's initialize sweeps.
func TestSessionInUseIsNeverIdle(t *testing.T) {
	r := newRig(t, nil) // SSE answers, stateful
	sid := r.rawSession(t, "127.0.0.2", "2025-06-18")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.endpoint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := httpFrom(t, "127.0.0.2").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() { io.Copy(io.Discard, resp.Body); close(ended) }()
	svc := r.proxy.service("charts")
	svc.mu.Lock()
	svc.sessions[sid].lastUsed.Store(time.Now().Add(-2 * sessionIdle).UnixNano())
	svc.mu.Unlock()
	r.rawSession(t, "127.0.0.3", "2025-06-18") // bob's initialize sweeps
	select {
	case <-ended:
		t.Fatal("the open stream was ended by another caller's initialize")
	case <-time.After(time.Second):
	}
	svc.mu.Lock()
	_, kept := svc.sessions[sid]
	svc.mu.Unlock()
	if !kept {
		t.Fatal("a session with an open stream was forgotten")
	}
}
