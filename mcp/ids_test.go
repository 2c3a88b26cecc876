package mcp

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestNoIDSpellingLetsAListThrough: ids that the upstream reads back as
// another request's id (-0 as 0, integers past 2^53 rounded) are refused,
// and even an answer taken for another request is filtered: alice, who may
// see file:///docs/* only, never sees a hidden resource or tool.
func TestNoIDSpellingLetsAListThrough(t *testing.T) {
	for _, jsonResp := range []bool{true, false} {
		r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: jsonResp})
		sid := r.rawSession(t, "127.0.0.2", "2025-06-18")
		h := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
		// A list call the upstream fails leaves nothing behind...
		r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":0,"method":"prompts/list","params":{"cursor":"garbage"}}`, h)
		r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":9007199254740991,"method":"prompts/list","params":{"cursor":"x"}}`, h)
		// ...and the ids that would be read back as those are refused.
		for _, id := range []string{"-0", "9007199254740992", "9007199254740993", "-9007199254740992", "1.0", "1e0", "01"} {
			a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":`+id+`,"method":"resources/list"}`, h)
			if strings.Contains(a.body, "secret") || !strings.Contains(a.body, "-32600") && !strings.Contains(a.body, "-32700") {
				t.Errorf("json=%v id %s: %d %s; want an invalid-request error and no hidden resource", jsonResp, id, a.status, a.body)
			}
		}
		// The canonical spellings work and are filtered, whatever method
		// the proxy last saw under the same id.
		for _, body := range []string{
			`{"jsonrpc":"2.0","id":0,"method":"resources/list"}`,
			`{"jsonrpc":"2.0","id":9007199254740991,"method":"tools/list"}`,
		} {
			a := r.post(t, "127.0.0.2", body, h)
			if a.status != http.StatusOK || strings.Contains(a.body, "secret") || strings.Contains(a.body, "delete_chart") {
				t.Errorf("json=%v %s: %d %s; want a filtered list", jsonResp, body, a.status, a.body)
			}
		}
	}
}

// TestBatchWithARepeatedIDIsRefused: two requests under one id share one
// answer upstream, which the proxy could filter as the other one's.
func TestBatchWithARepeatedIDIsRefused(t *testing.T) {
	for name, opts := range map[string]*sdk.StreamableHTTPOptions{
		"session":   {JSONResponse: true},
		"stateless": {Stateless: true, JSONResponse: true},
	} {
		r := newRig(t, opts)
		h := map[string]string{"Mcp-Protocol-Version": "2025-03-26"}
		if !opts.Stateless {
			h["Mcp-Session-Id"] = r.rawSession(t, "127.0.0.2", "2025-03-26")
		}
		before := r.up.posts.Load()
		a := r.post(t, "127.0.0.2", `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"prompts/list"}]`, h)
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, "repeats id 1") || strings.Contains(a.body, "delete_chart") {
			t.Errorf("%s: %d %s; want 400 naming the repeated id", name, a.status, a.body)
		}
		if got := r.up.posts.Load(); got != before {
			t.Errorf("%s: the upstream saw %d more requests", name, got-before)
		}
		// A call and an answer may share an id: they are different spaces.
		a = r.post(t, "127.0.0.2", `[{"jsonrpc":"2.0","id":2,"method":"tools/list"},{"jsonrpc":"2.0","id":3,"method":"prompts/list"}]`, h)
		if a.status != http.StatusOK || strings.Contains(a.body, "delete_chart") {
			t.Errorf("%s: distinct ids: %d %s", name, a.status, a.body)
		}
	}
}

// TestLongIDsAreRefused: what the proxy keeps about a request in flight is
// keyed by its id, so an id cannot be megabytes long.
func TestLongIDsAreRefused(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sid := r.rawSession(t, "127.0.0.2", "2025-06-18")
	h := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
	a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":"`+strings.Repeat("A", maxIDBytes+1)+`","method":"prompts/list"}`, h)
	if a.status != http.StatusBadRequest || !strings.Contains(a.body, "id longer than") {
		t.Fatalf("%d %s; want 400 about the id", a.status, a.body)
	}
	a = r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":"`+strings.Repeat("A", maxIDBytes)+`","method":"prompts/list"}`, h)
	if a.status != http.StatusOK {
		t.Fatalf("an id of %d bytes: %d %s", maxIDBytes, a.status, a.body)
	}
	// Answers end what was kept, errors as well as results.
	svc := r.proxy.service("charts")
	svc.mu.Lock()
	s := svc.sessions[sid]
	svc.mu.Unlock()
	r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":"e","method":"prompts/list","params":{"cursor":"garbage"}}`, h)
	if _, kept := s.lookup(idKey("e")); kept {
		t.Error("an error answer left its request remembered")
	}
}

// TestSubscriptionsListenDecidesEachResource: subscriptions/listen
// (2026-07-28) subscribes only to resources the caller may read; naming a
// hidden one denies the call before the upstream's subscribe handler runs.
func TestSubscriptionsListenDecidesEachResource(t *testing.T) {
	var mu sync.Mutex
	var subscribed []string
	s := sdk.NewServer(&sdk.Implementation{Name: "charts", Version: "1"}, &sdk.ServerOptions{
		SubscribeHandler: func(_ context.Context, r *sdk.SubscribeRequest) error {
			mu.Lock()
			subscribed = append(subscribed, r.Params.URI)
			mu.Unlock()
			return nil
		},
		UnsubscribeHandler: func(context.Context, *sdk.UnsubscribeRequest) error { return nil },
	})
	for _, uri := range []string{"file:///secret/b.txt", "file:///docs/a.txt"} {
		s.AddResource(&sdk.Resource{URI: uri, Name: uri}, func(context.Context, *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
			return &sdk.ReadResourceResult{}, nil
		})
	}
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, &sdk.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(hs.Close)
	r := newRigTo(t, hs.URL+"/mcp")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"x","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	listen := func(uris string) (int, string) {
		body := `{"jsonrpc":"2.0","id":2,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":[` + uris + `]},` + meta + `}}`
		req, err := http.NewRequest(http.MethodPost, r.endpoint(), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "subscriptions/listen")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := httpFrom(t, "127.0.0.2").Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body) // a granted stream runs until the timeout
		return resp.StatusCode, string(b)
	}
	status, body := listen(`"file:///docs/a.txt","file:///secret/b.txt"`)
	if !strings.Contains(body, "file:///secret/b.txt") || !strings.Contains(body, "-32001") {
		t.Errorf("listen naming a hidden resource: %d %s; want a denial naming it", status, body)
	}
	mu.Lock()
	if len(subscribed) != 0 {
		t.Errorf("the upstream subscribed %v for a denied listen", subscribed)
	}
	mu.Unlock()
	listen(`"file:///docs/a.txt"`)
	mu.Lock()
	defer mu.Unlock()
	if len(subscribed) != 1 || subscribed[0] != "file:///docs/a.txt" {
		t.Errorf("granted listen subscribed %v, want file:///docs/a.txt", subscribed)
	}
}

// TestRepeatedSessionHeaderIsRefused: the proxy checks one Mcp-Session-Id;
// a second one must not travel on to an upstream that might read it
// instead, and act in another caller's session.
func TestRepeatedSessionHeaderIsRefused(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	mine := r.rawSession(t, "127.0.0.2", "2025-06-18")
	theirs := r.rawSession(t, "127.0.0.3", "2025-06-18")
	req, err := http.NewRequest(http.MethodPost, r.endpoint(), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Add("Mcp-Session-Id", mine)
	req.Header.Add("Mcp-Session-Id", theirs)
	before := r.up.posts.Load()
	resp, err := httpFrom(t, "127.0.0.2").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "more than one Mcp-Session-Id") {
		t.Fatalf("%d %s; want 400 about the repeated header", resp.StatusCode, b)
	}
	if r.up.posts.Load() != before {
		t.Fatal("the request reached the upstream")
	}
}

// TestResourceUpdatesFollowThePolicyNow: an update about a resource
// reaches the caller only while it may read that resource, whenever it
// subscribed; other events pass.
func TestResourceUpdatesFollowThePolicyNow(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	alice, err := testWhoIs(netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	x := &exchange{p: r.proxy, d: decider{caller: alice, id: alice.identity(), svc: r.proxy.service("charts")}}
	update := func(uri string) []byte {
		return []byte(`{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"` + uri + `"}}`)
	}
	for _, tc := range []struct {
		data []byte
		want bool
	}{
		{update("file:///docs/a.txt"), true},
		{update("file:///secret/b.txt"), false},
		{[]byte(`[` + string(update("file:///docs/a.txt")) + `,` + string(update("file:///secret/b.txt")) + `]`), false},
		{[]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"notifications/resources/updated"}]}}`), true},
		{[]byte(`{"jsonrpc":"2.0","method":"notifications/resources/updated",`), false},
	} {
		if got := x.mayNotify(tc.data); got != tc.want {
			t.Errorf("mayNotify(%s) = %v, want %v", tc.data, got, tc.want)
		}
	}
	// The grant goes: so do the updates.
	r.setPolicy(mustPolicy(t, `{"grants": [{"src": ["node:alice"], "dst": ["svc:charts"], "tools": ["echo"]}]}`))
	if x.mayNotify(update("file:///docs/a.txt")) {
		t.Error("an update passed after the grant on the resource was withdrawn")
	}
}

// TestPrimingEventPassesWithAList: an SSE event with an id and no JSON (a
// priming event, what a client resumes from) passes unchanged even in an
// answer whose lists are filtered.
func TestPrimingEventPassesWithAList(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "id: prime-1\ndata: \n\n")
		io.WriteString(w, "event: message\nid: prime-2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"echo\"},{\"name\":\"delete_chart\"}]}}\n\n")
	}))
	t.Cleanup(up.Close)
	r := newRigTo(t, up.URL+"/mcp")
	a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, map[string]string{"Mcp-Protocol-Version": "2025-11-25"})
	if !strings.Contains(a.body, "id: prime-1\n") || !strings.Contains(a.body, "id: prime-2\n") {
		t.Errorf("an event id was lost: %q", a.body)
	}
	if strings.Contains(a.body, "delete_chart") || !strings.Contains(a.body, `"echo"`) {
		t.Errorf("the list was not filtered: %q", a.body)
	}
}

// TestWebPagesAreRefused: a page in a browser on a node (TUN mode routes
// the mesh for every program) that rebinds its own name to the serving
// node's address sends a Host that is a name, and an Origin. Either is
// refused before anything reaches the upstream, and audited.
func TestWebPagesAreRefused(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"from-evil-page"}}}`
	for _, tc := range []struct {
		name string
		edit func(*http.Request)
		want int
	}{
		{"a rebound name", func(r *http.Request) { r.Host = "evil.example:7811" }, http.StatusMisdirectedRequest},
		{"an Origin", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example:7811") }, http.StatusForbidden},
	} {
		req, err := http.NewRequest(http.MethodPost, r.endpoint(), strings.NewReader(call))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-03-26")
		tc.edit(req)
		resp, err := httpFrom(t, "127.0.0.2").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if n := r.up.count("echo"); n != 0 {
		t.Fatalf("the upstream ran echo %d times", n)
	}
	if evs := r.auditEvents(); len(evs) != 2 || evs[0].Decision != "deny" || evs[0].Caller != "spiffe://td/node/alice" {
		t.Fatalf("audit: %+v; want two denials of alice", evs)
	}
	// An address, with or without a port, is what real clients send.
	for _, h := range []string{"127.0.0.1", "127.0.0.1:7811", "[fd00::1]:7811", "100.64.0.1"} {
		if !addressedByIP(h) {
			t.Errorf("Host %q refused", h)
		}
	}
}
