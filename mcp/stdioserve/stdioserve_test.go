package stdioserve_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/stdioserve"
)

// TestHelperStdioServer is the stdio MCP server under test (the official Go
// SDK over stdin/stdout), run as a child of the test binary.
func TestHelperStdioServer(t *testing.T) {
	if os.Getenv("MCPMESH_STDIO_CHILD") == "" {
		t.Skip("child process of TestStdioServerGivesEachSessionItsOwnProcess")
	}
	srv := sdk.NewServer(&sdk.Implementation{Name: "pid", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "pid"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strconv.Itoa(os.Getpid())}}}, nil, nil
	})
	_ = srv.Run(context.Background(), &sdk.StdioTransport{})
	os.Exit(0)
}

func TestStdioServerGivesEachSessionItsOwnProcess(t *testing.T) {
	t.Setenv("MCPMESH_STDIO_CHILD", "1")
	s, err := stdioserve.Start(os.Args[0]+" -test.run ^TestHelperStdioServer$", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pid := func(cs *sdk.ClientSession) string {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "pid"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Content[0].(*sdk.TextContent).Text
	}
	var pids []string
	for range 2 {
		c := sdk.NewClient(&sdk.Implementation{Name: "c", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.URL(), MaxRetries: -1, HTTPClient: asProxy(s)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		p := pid(cs)
		if again := pid(cs); again != p {
			t.Fatalf("one session reached two processes: %s then %s", p, again)
		}
		pids = append(pids, p)
	}
	if pids[0] == pids[1] {
		t.Fatalf("two sessions share process %s", pids[0])
	}
	if reflect.DeepEqual(pids, []string{strconv.Itoa(os.Getpid()), strconv.Itoa(os.Getpid())}) {
		t.Fatal("the tool ran in the test process, not a child")
	}
}

func TestSplitCommand(t *testing.T) {
	got, err := stdioserve.SplitCommand(`npx -y "@scope/server x" '/srv/my docs'`)
	if err != nil || !reflect.DeepEqual(got, []string{"npx", "-y", "@scope/server x", "/srv/my docs"}) {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := stdioserve.SplitCommand(`a "b`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
	if _, err := stdioserve.Start("/no/such/binary", nil); err == nil {
		t.Fatal("a missing command was accepted")
	}
}

// TestIdleSessionEndsWithItsProcess: a session nobody uses any more (no
// request, no open stream) is ended with its process, so clients that
// vanish without DELETE cannot hold the upstream's processes for good; a
// connected client, whose stream is open, keeps its session however quiet.
func TestIdleSessionEndsWithItsProcess(t *testing.T) {
	t.Setenv("MCPMESH_STDIO_CHILD", "1")
	const idle = 500 * time.Millisecond
	s, err := stdioserve.StartIdle(os.Args[0]+" -test.run ^TestHelperStdioServer$", nil, idle)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A connected SDK client keeps its standalone stream open.
	c := sdk.NewClient(&sdk.Implementation{Name: "c", Version: "1"}, nil)
	kept, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.URL(), MaxRetries: -1, HTTPClient: asProxy(s)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()

	// A raw client initializes, asks once, and goes away without DELETE.
	post := func(sid, body string) (*http.Response, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL(), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := asProxy(s).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, _ := post("", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d", resp.StatusCode)
	}
	post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_, body := post(sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid","arguments":{}}}`)
	var answer struct {
		Result struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || len(answer.Result.Content) != 1 {
		t.Fatalf("tools/call pid: %s (%v)", body, err)
	}
	pid, err := strconv.Atoi(answer.Result.Content[0].Text)
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d of the idle session still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, _ := post(sid, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the idle session still answers: %d", resp.StatusCode)
	}
	time.Sleep(2 * idle)
	if _, err := kept.CallTool(ctx, &sdk.CallToolParams{Name: "pid"}); err != nil {
		t.Fatalf("a connected client lost its quiet session: %v", err)
	}
}

// asProxy is an HTTP client that sends s's credential, as the node's proxy
// does.
func asProxy(s *stdioserve.Server) *http.Client {
	return &http.Client{Transport: credentialed{s.Credential()}}
}

type credentialed struct{ h http.Header }

func (c credentialed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range c.h {
		r.Header[k] = vs
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestOnlyTheProxyIsAnswered: the loopback endpoint is open to every user
// of the host and every page in its browsers. Without the credential, for
// another Host, or with an Origin, a request is refused before any process
// starts; with all three right it is served.
func TestOnlyTheProxyIsAnswered(t *testing.T) {
	t.Setenv("MCPMESH_STDIO_CHILD", "1")
	s, err := stdioserve.Start(os.Args[0]+" -test.run ^TestHelperStdioServer$", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	try := func(name string, edit func(*http.Request)) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.URL(), strings.NewReader(init))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, vs := range s.Credential() {
			req.Header[k] = vs
		}
		edit(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Mcp-Session-Id") != "" && name != "the proxy" {
			t.Errorf("%s opened a session", name)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name string
		edit func(*http.Request)
		want int
	}{
		{"a local user without the credential", func(r *http.Request) { r.Header.Del("Authorization") }, http.StatusUnauthorized},
		{"a guessed credential", func(r *http.Request) { r.Header.Set("Authorization", "Bearer 00") }, http.StatusUnauthorized},
		{"a page rebinding a name to loopback", func(r *http.Request) { r.Host = "evil.example:" + r.URL.Port() }, http.StatusMisdirectedRequest},
		{"a web page", func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }, http.StatusForbidden},
		{"the proxy", func(*http.Request) {}, http.StatusOK},
	} {
		if got := try(tc.name, tc.edit); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
}
