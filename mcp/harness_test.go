package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const testPolicy = `{
  // alice may use some of charts; bob (tag:billing) only get_invoice under a condition.
  "tagOwners": {"tag:billing": ["node:admin"], "tag:phi": ["node:admin"]},
  "grants": [
    {"src": ["node:alice"], "dst": ["svc:charts"], "tools": ["echo", "read_*"],
     "resources": ["file:///docs/*"], "prompts": ["greet"]},
    {"src": ["tag:billing"], "dst": ["tag:phi"], "tools": ["get_invoice"], "when": "args.amount < 10000"},
  ],
}`

// alice, bob and carol call from 127.0.0.2, .3 and .4; carol has no grant.
var testCallers = map[netip.Addr]Caller{
	netip.MustParseAddr("127.0.0.2"): {Name: "alice", ID: "spiffe://td/node/alice"},
	netip.MustParseAddr("127.0.0.3"): {Name: "bob", ID: "spiffe://td/node/bob", Tags: []string{"tag:billing"}},
	netip.MustParseAddr("127.0.0.4"): {Name: "carol", ID: "spiffe://td/node/carol"},
}

func mustPolicy(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("acl.hujson", []byte(src))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return p
}

// upstream is a real MCP server (the Go SDK) with counters.
type upstream struct {
	url   string
	calls sync.Map // tool name -> *atomic.Int64
	posts atomic.Int64
	// resumes counts GETs that resume a stream (Last-Event-ID).
	resumes atomic.Int64
	bodies  chan []byte
	srv     *httptest.Server
}

func (u *upstream) count(tool string) int64 {
	v, ok := u.calls.Load(tool)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (u *upstream) hit(tool string) {
	v, _ := u.calls.LoadOrStore(tool, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

type echoIn struct {
	Text string `json:"text"`
}

type invoiceIn struct {
	Amount float64 `json:"amount"`
}

func newUpstream(t testing.TB, opts *sdk.StreamableHTTPOptions) *upstream {
	t.Helper()
	u := &upstream{bodies: make(chan []byte, 1024)}
	s := sdk.NewServer(&sdk.Implementation{Name: "charts", Version: "1"}, nil)
	tool := func(name string) {
		sdk.AddTool(s, &sdk.Tool{Name: name, Description: name}, func(_ context.Context, _ *sdk.CallToolRequest, in echoIn) (*sdk.CallToolResult, any, error) {
			u.hit(name)
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: name + ":" + in.Text}}}, nil, nil
		})
	}
	tool("echo")
	tool("read_chart")
	tool("delete_chart")
	sdk.AddTool(s, &sdk.Tool{Name: "get_invoice"}, func(_ context.Context, _ *sdk.CallToolRequest, in invoiceIn) (*sdk.CallToolResult, any, error) {
		u.hit("get_invoice")
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "ok"}}}, nil, nil
	})
	res := func(uri string) {
		s.AddResource(&sdk.Resource{URI: uri, Name: uri}, func(_ context.Context, r *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
			u.hit(uri)
			return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, Text: "text of " + uri}}}, nil
		})
	}
	res("file:///docs/a.txt")
	res("file:///secret/b.txt")
	prompt := func(name string) {
		s.AddPrompt(&sdk.Prompt{Name: name}, func(_ context.Context, r *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
			u.hit(name)
			return &sdk.GetPromptResult{Messages: []*sdk.PromptMessage{{Role: "user", Content: &sdk.TextContent{Text: name}}}}, nil
		})
	}
	prompt("greet")
	prompt("secret_prompt")
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, opts)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Last-Event-ID") != "" {
			u.resumes.Add(1)
		}
		if r.Method == http.MethodPost {
			u.posts.Add(1)
			b, _ := io.ReadAll(r.Body)
			select {
			case u.bodies <- b:
			default:
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.url = u.srv.URL + "/mcp"
	return u
}

// newUpstreamWith serves srv (stateful, SSE answers) on 127.0.0.1 and
// returns its MCP URL.
func newUpstreamWith(t testing.TB, srv *sdk.Server) string {
	t.Helper()
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil))
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

// testWhoIs names the callers of testCallers, and no one else.
func testWhoIs(a netip.Addr) (Caller, error) {
	if c, ok := testCallers[a]; ok {
		return c, nil
	}
	return Caller{}, errors.New("not a mesh peer")
}

// rig is an upstream behind a proxy, with the policy swappable.
type rig struct {
	up     *upstream
	proxy  *Proxy
	base   string // http://127.0.0.1:port
	pol    atomic.Pointer[policy.Policy]
	ver    atomic.Uint64
	mu     sync.Mutex
	events []api.AuditEvent
	// auditErr, when set, fails every audit record; durable, when set, is
	// the wait the audit hook returns.
	auditErr error
	durable  func() error
	// sink, when set before the first request, replaces the in-memory
	// audit trail (the benchmarks use the node's real audit log).
	sink func([]api.AuditEvent) (func() error, error)
	// batches are the events of each call of the audit hook.
	batches [][]api.AuditEvent
}

func newRig(t testing.TB, opts *sdk.StreamableHTTPOptions) *rig {
	t.Helper()
	up := newUpstream(t, opts)
	r := newRigTo(t, up.url)
	r.up = up
	return r
}

// newRigTo puts a proxy in front of an upstream at url, which may run in
// another process.
func newRigTo(t testing.TB, url string) *rig {
	t.Helper()
	r := &rig{}
	r.setPolicy(mustPolicy(t, testPolicy))
	r.proxy = New(Config{
		Node:   "server-1",
		WhoIs:  testWhoIs,
		Policy: func() (*policy.Policy, uint64) { return r.pol.Load(), r.ver.Load() },
		Audit: func(evs []api.AuditEvent) (func() error, error) {
			if r.sink != nil {
				return r.sink(evs)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.batches = append(r.batches, append([]api.AuditEvent(nil), evs...))
			if r.auditErr != nil {
				return nil, r.auditErr
			}
			r.events = append(r.events, evs...)
			return r.durable, nil
		},
	})
	if err := r.proxy.SetService(Service{Name: "charts", Tags: []string{"tag:phi"}, URL: url}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.base = "http://" + ln.Addr().String()
	done := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("role", "proxy"), func(context.Context) { done <- r.proxy.Serve(ln) })
	t.Cleanup(func() {
		r.proxy.Close()
		// A test that never called may close the proxy before Serve began,
		// which Serve then refuses with net.ErrClosed.
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
	})
	return r
}

func (r *rig) setPolicy(p *policy.Policy) {
	r.pol.Store(p)
	r.ver.Add(1)
}

func (r *rig) endpoint() string { return r.base + "/svc/charts/mcp" }

func (r *rig) auditEvents() []api.AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.AuditEvent(nil), r.events...)
}

// httpFrom returns an HTTP client whose connections come from src.
func httpFrom(t testing.TB, src string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)},
			Timeout:   5 * time.Second,
		}).DialContext,
		MaxIdleConnsPerHost: 128,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// connect opens an SDK client session through the proxy from src.
func (r *rig) connect(t testing.TB, src string, version string) (*sdk.ClientSession, error) {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
	tr := &sdk.StreamableClientTransport{Endpoint: r.endpoint(), HTTPClient: httpFrom(t, src), DisableStandaloneSSE: true}
	var opts *sdk.ClientSessionOptions
	if version != "" {
		opts = &sdk.ClientSessionOptions{ProtocolVersion: version}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, tr, opts)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

func (r *rig) mustConnect(t testing.TB, src, version string) *sdk.ClientSession {
	t.Helper()
	cs, err := r.connect(t, src, version)
	if err != nil {
		t.Fatalf("connect from %s: %v", src, err)
	}
	return cs
}

// rawResp is an HTTP answer with its JSON-RPC messages (from a JSON body or
// from the data of SSE events).
type rawResp struct {
	status int
	header http.Header
	msgs   []map[string]any
	body   string
}

// post sends a raw JSON-RPC body through the proxy from src.
func (r *rig) post(t testing.TB, src string, body string, hdr map[string]string) rawResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.endpoint(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpFrom(t, src).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := rawResp{status: resp.StatusCode, header: resp.Header, body: string(b)}
	var datas []string
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for _, l := range strings.Split(string(b), "\n") {
			if d, ok := strings.CutPrefix(l, "data: "); ok && strings.TrimSpace(d) != "" {
				datas = append(datas, d) // not a priming event's empty data
			}
		}
	} else if len(b) > 0 {
		datas = []string{string(b)}
	}
	for _, d := range datas {
		var v any
		if err := json.Unmarshal([]byte(d), &v); err != nil {
			t.Fatalf("answer %q: %v", d, err)
		}
		switch x := v.(type) {
		case map[string]any:
			out.msgs = append(out.msgs, x)
		case []any:
			for _, e := range x {
				out.msgs = append(out.msgs, e.(map[string]any))
			}
		}
	}
	return out
}

// byID finds the message answering id.
func (a rawResp) byID(id float64) map[string]any {
	for _, m := range a.msgs {
		if m["id"] == id {
			return m
		}
	}
	return nil
}

func errMsg(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func errCode(m map[string]any) float64 {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(float64)
	return c
}

// rawSession initializes a session by raw HTTP with the given protocol
// version and returns its id.
func (r *rig) rawSession(t testing.TB, src, version string) string {
	t.Helper()
	a := r.post(t, src, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	sid := a.header.Get("Mcp-Session-Id")
	if a.status != 200 || sid == "" {
		t.Fatalf("initialize: %d %q", a.status, a.body)
	}
	h := map[string]string{"Mcp-Session-Id": sid}
	if version >= "2025-06-18" {
		h["Mcp-Protocol-Version"] = version
	}
	if a := r.post(t, src, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, h); a.status != 202 {
		t.Fatalf("initialized: %d %q", a.status, a.body)
	}
	return sid
}
