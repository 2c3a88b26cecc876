package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// rawMCP is a minimal Streamable HTTP client for what the Go SDK v1.8.0
// client cannot send (task-augmented calls, tasks/*).
type rawMCP struct {
	t       *testing.T
	url     string
	session string
}

func newRawMCP(t *testing.T, n *nodeT, svc string) *rawMCP {
	mux := http.NewServeMux()
	mux.Handle("/localapi/v0/mcp/{service}", n.MCPForwarder())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	r := &rawMCP{t: t, url: hs.URL + localapi.MCPPath(svc)}
	r.call(1, "initialize", map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "raw", "version": "1"}})
	r.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return r
}

func (r *rawMCP) post(body string) *http.Response {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if r.session != "" {
		req.Header.Set("Mcp-Session-Id", r.session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
		r.session = s
	}
	return resp
}

// call sends a request and returns its response message.
func (r *rawMCP) call(id int, method string, params any) map[string]any {
	r.t.Helper()
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	resp := r.post(string(b))
	defer resp.Body.Close()
	var msgs []string
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				msgs = append(msgs, strings.TrimSpace(d))
			}
		}
	} else {
		all, _ := io.ReadAll(resp.Body)
		msgs = append(msgs, string(all))
	}
	for _, m := range msgs {
		var o map[string]any
		if json.Unmarshal([]byte(m), &o) == nil {
			if f, ok := o["id"].(float64); ok && int(f) == id {
				return o
			}
		}
	}
	r.t.Fatalf("%s: no answer with id %d in %d messages (HTTP %d)", method, id, len(msgs), resp.StatusCode)
	return nil
}

// TestTasksBelongToTheIdentityThatCreatedThem: a task created through the
// proxy can be followed by its creator and by nobody else, even a node with
// the same grant, and tasks/list shows each caller only its own.
func TestTasksBelongToTheIdentityThatCreatedThem(t *testing.T) {
	bin := meshtest.EverythingBin(t)
	m := meshtest.New(t, meshtest.Options{})
	srv := m.AddNode("tools-server")
	if _, err := srv.Serve(context.Background(), localapi.ServeRequest{Name: "everything", Upstream: startEverythingHTTP(t, bin)}); err != nil {
		t.Fatal(err)
	}
	agent, other := m.AddNode("agent"), m.AddNode("other")
	applyPolicy(t, m, `{
	  "groups": { "group:agents": ["node:agent", "node:other"] },
	  "grants": [ { "src": ["group:agents"], "dst": ["svc:everything"], "tools": ["simulate-research-query"] } ],
	}`)
	m.WaitCatalog(agent, "everything")
	m.WaitCatalog(other, "everything")
	waitFor(t, "the server's rules", func() bool { p, _ := srv.Policy(); return p != nil })

	a := newRawMCP(t, agent, "everything")
	created := a.call(2, "tools/call", map[string]any{"name": "simulate-research-query", "arguments": map[string]any{"topic": "mesh"}, "task": map[string]any{"ttl": 60000}})
	res, _ := created["result"].(map[string]any)
	task, _ := res["task"].(map[string]any)
	id, _ := task["taskId"].(string)
	if id == "" {
		t.Fatalf("no task created: %v", created)
	}
	if got := a.call(3, "tasks/get", map[string]any{"taskId": id}); got["error"] != nil {
		t.Fatalf("the creator cannot follow its task: %v", got["error"])
	}

	o := newRawMCP(t, other, "everything")
	got := o.call(4, "tasks/get", map[string]any{"taskId": id})
	// Refused by the proxy itself (code -32001, naming the caller), not
	// left to the upstream, which might keep tasks per session or not.
	refusedByProxy := func(got map[string]any) bool {
		e, _ := got["error"].(map[string]any)
		msg, _ := e["message"].(string)
		code, _ := e["code"].(float64)
		return code == -32001 && strings.Contains(msg, "not found for "+other.ID())
	}
	if !refusedByProxy(got) {
		t.Fatalf("another identity reached the task: %v", got)
	}
	if got := o.call(5, "tasks/cancel", map[string]any{"taskId": id}); !refusedByProxy(got) {
		t.Fatalf("another identity's cancel was not refused by the proxy: %v", got)
	}
	list := func(r *rawMCP, rid int) int {
		l := r.call(rid, "tasks/list", map[string]any{})
		res, _ := l["result"].(map[string]any)
		ts, _ := res["tasks"].([]any)
		return len(ts)
	}
	if n := list(o, 6); n != 0 {
		t.Fatalf("tasks/list shows another identity %d tasks", n)
	}
	if n := list(a, 7); n != 1 {
		t.Fatalf("tasks/list shows the creator %d tasks, want 1", n)
	}
}
