package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestPolicyChangeTakesEffectOnOpenSession(t *testing.T) {
	modes(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		cs := r.mustConnect(t, "127.0.0.2", "")
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "1"}}); err != nil {
			t.Fatal(err)
		}
		r.setPolicy(mustPolicy(t, `{"grants": [{"src": ["node:alice"], "dst": ["svc:charts"], "tools": ["delete_chart"]}]}`))
		if got := toolNames(t, cs); !slices.Equal(got, []string{"delete_chart"}) {
			t.Errorf("tools after the change = %v", got)
		}
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "2"}}); err == nil {
			t.Error("echo still allowed after the change")
		}
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"text": "3"}}); err != nil {
			t.Errorf("delete_chart after the change: %v", err)
		}
		if n := r.up.count("echo"); n != 1 {
			t.Errorf("echo ran %d times, want 1", n)
		}
		// No policy at all: everything is denied, even ping.
		r.pol.Store(nil)
		if err := cs.Ping(ctx, nil); err == nil {
			t.Error("ping allowed without a policy")
		}
	})
}

func TestBatchDecidedElementByElement(t *testing.T) {
	modes(t, func(t *testing.T, r *rig) {
		sid := r.rawSession(t, "127.0.0.2", "2025-03-26")
		h := map[string]string{"Mcp-Session-Id": sid}
		a := r.post(t, "127.0.0.2", `[
			{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}}},
			{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_chart","arguments":{"text":"boom"}}},
			{"jsonrpc":"2.0","id":3,"method":"tools/list"}
		]`, h)
		if a.status != 200 {
			t.Fatalf("batch: %d %s", a.status, a.body)
		}
		if m := a.byID(1); m == nil || m["result"] == nil {
			t.Errorf("allowed element: %v (answer %s)", m, a.body)
		}
		if m := a.byID(2); m == nil || errCode(m) != CodeDenied || !strings.Contains(errMsg(m), `"delete_chart" denied`) {
			t.Errorf("denied element: %v", m)
		}
		if m := a.byID(3); m != nil {
			tools := m["result"].(map[string]any)["tools"].([]any)
			if len(tools) != 2 {
				t.Errorf("tools in a batch answer: %v", tools)
			}
		} else {
			t.Errorf("no tools/list answer in %s", a.body)
		}
		if n := r.up.count("delete_chart"); n != 0 {
			t.Errorf("delete_chart ran %d times", n)
		}
		// From 2025-06-18 on, a batch is an error.
		sid2 := r.rawSession(t, "127.0.0.2", "2025-06-18")
		posts := r.up.posts.Load()
		a = r.post(t, "127.0.0.2", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
			map[string]string{"Mcp-Session-Id": sid2, "Mcp-Protocol-Version": "2025-06-18"})
		if a.status != 400 || len(a.msgs) != 1 || errCode(a.msgs[0]) != codeInvalidRequest {
			t.Errorf("batch in 2025-06-18: %d %s", a.status, a.body)
		}
		if r.up.posts.Load() != posts {
			t.Error("a refused batch reached the upstream")
		}
	})
}

func TestMalformedMessagesNeverForwarded(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sid := r.rawSession(t, "127.0.0.2", "2025-03-26")
	h := map[string]string{"Mcp-Session-Id": sid}
	posts := r.up.posts.Load()
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", DefaultMaxMessageBytes) + `"}}}`
	cases := []struct {
		name, body string
		status     int
		code       float64
	}{
		{"duplicate key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_chart"}}`, 400, codeParse},
		{"nested duplicate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1,"a":2}}}`, 400, codeParse},
		{"oversized", big, 413, codeInvalidRequest},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}`, 400, codeParse},
		{"invalid utf-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\xff\"}}", 400, codeParse},
		{"lone surrogate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\ud800"}}`, 400, codeParse},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, 400, codeInvalidRequest},
		{"unknown member", `{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}`, 400, codeInvalidRequest},
	}
	for _, c := range cases {
		a := r.post(t, "127.0.0.2", c.body, h)
		if a.status != c.status || len(a.msgs) != 1 || errCode(a.msgs[0]) != c.code {
			t.Errorf("%s: %d %.200s", c.name, a.status, a.body)
		}
	}
	// An unknown method is denied, not forwarded.
	a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":9,"method":"frobnicate/now"}`, h)
	if m := a.byID(9); m == nil || errCode(m) != codeMethodNotFound {
		t.Errorf("unknown method: %d %s", a.status, a.body)
	}
	if got := r.up.posts.Load(); got != posts {
		t.Errorf("upstream saw %d malformed or denied POSTs", got-posts)
	}
}

func TestForwardsReencodedMessage(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sid := r.rawSession(t, "127.0.0.2", "2025-03-26")
	for len(r.up.bodies) > 0 {
		<-r.up.bodies
	}
	a := r.post(t, "127.0.0.2", "{ \"params\" : {\"arguments\":{\"text\":\"\\u0041<\"}, \"name\":\"echo\"},\n \"method\":\"tools/call\", \"id\":7, \"jsonrpc\":\"2.0\" }",
		map[string]string{"Mcp-Session-Id": sid})
	if m := a.byID(7); m == nil || m["result"] == nil {
		t.Fatalf("call: %s", a.body)
	}
	got := string(<-r.up.bodies)
	want := `{"id":7,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"text":"A<"},"name":"echo"}}`
	if got != want {
		t.Errorf("forwarded %s\nwant      %s", got, want)
	}
}

func TestStatelessProtocolHeaders(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ctx := context.Background()
	cs := r.mustConnect(t, "127.0.0.2", "")
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %s, want 2026-07-28", v)
	}
	if got := toolNames(t, cs); !slices.Equal(got, []string{"echo", "read_chart"}) {
		t.Errorf("tools = %v", got)
	}
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "s"}}); err != nil {
		t.Errorf("echo: %v", err)
	}
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"text": "s"}}); err == nil {
		t.Error("delete_chart allowed")
	}
	// A header that disagrees with the body is refused before deciding.
	posts := r.up.posts.Load()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_chart","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	a := r.post(t, "127.0.0.2", body, map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"})
	if len(a.msgs) != 1 || errCode(a.msgs[0]) != CodeHeaderMismatch {
		t.Errorf("mismatched Mcp-Name: %d %s", a.status, a.body)
	}
	a = r.post(t, "127.0.0.2", body, map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", "Mcp-Name": "delete_chart"})
	if len(a.msgs) != 1 || errCode(a.msgs[0]) != CodeHeaderMismatch {
		t.Errorf("mismatched Mcp-Method: %d %s", a.status, a.body)
	}
	if r.up.posts.Load() != posts || r.up.count("delete_chart") != 0 {
		t.Error("a mismatched request reached the upstream")
	}
}

func TestAuditEventsCarryDigestNotArguments(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	cs := r.mustConnect(t, "127.0.0.2", "")
	ctx := context.Background()
	cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "SECRET-PHI-1"}})
	cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"text": "SECRET-PHI-2"}})
	var allow, deny int
	for _, e := range r.auditEvents() {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), "SECRET-PHI") {
			t.Errorf("audit event holds arguments: %s", b)
		}
		if e.Node != "server-1" || e.Service != "charts" || e.Caller != "spiffe://td/node/alice" || e.Policy == 0 || e.Time.IsZero() {
			t.Errorf("incomplete event: %s", b)
		}
		if e.Method != "tools/call" {
			continue
		}
		if !strings.HasPrefix(e.ArgsDigest, DigestPrefix) || len(e.ArgsDigest) != len(DigestPrefix)+64 || e.Session == "" {
			t.Errorf("event without digest or session: %s", b)
		}
		// Whoever holds the node's key can check a candidate; a plain
		// hash of the candidate, which anyone can compute, does not match.
		arg := `{"text":"SECRET-PHI-1"}`
		if e.Tool == "delete_chart" {
			arg = `{"text":"SECRET-PHI-2"}`
		}
		if d, err := ArgsDigest(r.proxy.cfg.DigestKey, []byte(arg)); err != nil || d != e.ArgsDigest {
			t.Errorf("ArgsDigest of the call's arguments: %s, %v; the event has %s", d, err, e.ArgsDigest)
		}
		plain := sha256.Sum256([]byte(arg))
		if strings.Contains(e.ArgsDigest, hex.EncodeToString(plain[:])) {
			t.Errorf("digest is the plain hash of the arguments: %s", b)
		}
		switch {
		case e.Tool == "echo" && e.Decision == "allow" && strings.HasPrefix(e.Reason, "grant at acl.hujson:"):
			allow++
		case e.Tool == "delete_chart" && e.Decision == "deny" && strings.Contains(e.Reason, "default deny"):
			deny++
		default:
			t.Errorf("unexpected event %s", b)
		}
	}
	if allow != 1 || deny != 1 {
		t.Errorf("tools/call events: %d allow, %d deny; want 1 and 1", allow, deny)
	}
	key := []byte("k")
	if d := argsDigest(key, map[string]any{"b": json.Number("1"), "a": "x"}); d != argsDigest(key, map[string]any{"a": "x", "b": json.Number("1")}) {
		t.Error("digest depends on key order")
	}
	if argsDigest(key, map[string]any{"a": "x"}) == argsDigest([]byte("other"), map[string]any{"a": "x"}) {
		t.Error("digest does not depend on the key")
	}
	for _, bad := range []string{`["x"]`, `"x"`, `{"a":1,"a":2}`, `{`} {
		if _, err := ArgsDigest(key, []byte(bad)); err == nil {
			t.Errorf("ArgsDigest accepted %s", bad)
		}
	}
}

func TestSetServiceRefusesNonLoopback(t *testing.T) {
	p := New(Config{})
	defer p.Close()
	for _, u := range []string{"http://10.0.0.1:9000/mcp", "http://example.com/mcp", "https://127.0.0.1/mcp", "http://0.0.0.0:9/mcp"} {
		if err := p.SetService(Service{Name: "x", URL: u}); err == nil {
			t.Errorf("SetService(%s) accepted", u)
		}
	}
	for _, u := range []string{"http://127.0.0.1:9000/mcp", "http://localhost:1/mcp", "http://[::1]:2/mcp"} {
		if err := p.SetService(Service{Name: "x", URL: u}); err != nil {
			t.Errorf("SetService(%s): %v", u, err)
		}
	}
}

func TestUnknownServiceIs404(t *testing.T) {
	r := newRig(t, nil)
	r.proxy.RemoveService("charts")
	a := r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	if a.status != 404 || len(a.msgs) != 1 || !strings.Contains(errMsg(a.msgs[0]), `no service "charts"`) {
		t.Errorf("unknown service: %d %s", a.status, a.body)
	}
}
