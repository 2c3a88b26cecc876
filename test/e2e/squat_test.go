package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

// TestAnotherUserCannotTakeAnUpstreamsPort: while a loopback upstream is
// down, another user of the host binds its port to receive the calls the
// policy allows, and answer them. The node refuses to connect to a port
// served by another user than the one who served it when the node began,
// so the squatter gets nothing; the real server, back, is served again.
// The upstream is named by address, and by "localhost", which the node
// checks at the address the connection reached.
func TestAnotherUserCannotTakeAnUpstreamsPort(t *testing.T) {
	netnstest.RequireRoot(t) // to run the squatter as another user
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) { anotherUserCannotTakeAnUpstreamsPort(t, host) })
	}
}

func anotherUserCannotTakeAnUpstreamsPort(t *testing.T, host string) {
	handler := chartServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	upstream := &http.Server{Handler: handler}
	go upstream.Serve(ln)

	m := meshtest.New(t, meshtest.Options{})
	ehr := m.AddNode("ehr-server")
	url := fmt.Sprintf("http://%s:%d/mcp", host, port)
	if _, err := ehr.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: url}); err != nil {
		t.Fatal(err)
	}
	_, s := grantedClient(t, m, ehr, "ward-laptop", ehrPolicy, "ehr")
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "read_chart", Arguments: map[string]any{"patient": "p-1"}})
		if err == nil && res.IsError {
			err = fmt.Errorf("tool error: %v", res.Content)
		}
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("before: %v", err)
	}

	// The upstream goes down, and user nobody binds its port.
	upstream.Close()
	squatter, out := startSquatter(t, port)
	mustNotReach(t, out, "a call while another user held the port", call)

	// The squatter goes, the real server comes back: served again.
	stop(squatter)
	serveOn(t, port, handler)
	if err := call(); err != nil {
		t.Fatalf("after the real server came back: %v", err)
	}
}

// TestAPinnedUpstreamUserIsTheOnlyOneConnectedTo: with --upstream-user,
// another user who holds the port first gets nothing. When it already
// holds the port at serve time, serve is refused, naming both users; when
// it binds the port before the real server ever started (so no owner
// could be learnt from it), the node still never connects to it.
func TestAPinnedUpstreamUserIsTheOnlyOneConnectedTo(t *testing.T) {
	netnstest.RequireRoot(t) // to run the squatter as another user
	handler := chartServer()
	port := freeLoopbackPort(t)
	upstream := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	m := meshtest.New(t, meshtest.Options{})
	ehr := m.AddNode("ehr-server")
	ctx := context.Background()

	// The squatter holds the port at serve time: refused, and not served.
	squatter, _ := startSquatter(t, port)
	_, err := ehr.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: upstream, UpstreamUser: "root"})
	if err == nil || !strings.Contains(err.Error(), "nobody (uid 65534)") || !strings.Contains(err.Error(), "root (uid 0)") {
		t.Fatalf("serve with the port held by nobody = %v; want a refusal naming nobody (uid 65534) and root (uid 0)", err)
	}
	if svcs, err := m.Admin.Services(ctx); err != nil || len(svcs) != 0 {
		t.Fatalf("services after a refused serve = %v, %v; want none", svcs, err)
	}
	stop(squatter)

	// Nothing listens at serve time; the squatter binds first.
	res, err := ehr.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: upstream, UpstreamUser: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if res.UpstreamOwner != "" {
		t.Fatalf("UpstreamOwner = %q with nothing on the port", res.UpstreamOwner)
	}
	squatter, out := startSquatter(t, port)
	laptop := grantedNode(t, m, ehr, "ward-laptop", ehrPolicy, "ehr")
	session := opensSession(t, laptop, "ehr")
	mustNotReach(t, out, "a session on the pinned port", session)

	// The real server, run by root, is connected to.
	stop(squatter)
	real := serveOn(t, port, handler)
	s, err := meshClient(t, laptop, "ehr")
	if err != nil {
		t.Fatalf("the real server on the pinned port: %v", err)
	}
	if res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "read_chart", Arguments: map[string]any{"patient": "p-1"}}); err != nil || res.IsError {
		t.Fatalf("read_chart on the real server = %v, %v", res, err)
	}
	res, err = ehr.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: upstream, UpstreamUser: "root"})
	if err != nil || res.UpstreamOwner != "root (uid 0)" {
		t.Fatalf("serve again = %+v, %v; want the owner root (uid 0)", res, err)
	}

	// The node restarts while the server is down and the squatter holds
	// the port: the saved service keeps its pin.
	s.Close()
	real.Close()
	m.StopNode("ehr-server")
	squatter, out = startSquatter(t, port)
	if _, err := m.StartNode("ehr-server", ""); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, out, "after a restart, a session on the pinned port", session)
	stop(squatter)
	serveOn(t, port, handler)
	waitFor(t, "a session with the restarted node's real upstream", func() bool { return session() == nil })
}

// chartServer is a stateless Go SDK MCP server with one tool, read_chart.
func chartServer() http.Handler {
	srv := sdk.NewServer(&sdk.Implementation{Name: "ehr", Version: "1.0"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "read_chart"}, func(_ context.Context, _ *sdk.CallToolRequest, in chartArgs) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "chart of " + in.Patient}}}, nil, nil
	})
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{Stateless: true})
}

// TestASquatterOnTheUpstreamsOwnAddressGetsNothing: the upstream is
// served on [::1], where its server listens on every IPv6 address, and
// also on IPv4's 0.0.0.0 as root. When the server goes, another user binds
// [::1] on the port; the connection reaches it, not root's IPv4 socket,
// and the node, which checks the listener that took the connection (not
// any listener of the port), refuses it.
func TestASquatterOnTheUpstreamsOwnAddressGetsNothing(t *testing.T) {
	netnstest.RequireRoot(t) // to run the squatter as another user
	handler := chartServer()
	port := freeLoopbackPort(t)
	v6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err) // CI's machines have it
	}
	v6srv := &http.Server{Handler: handler}
	go v6srv.Serve(v6)
	v4, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	v4srv := &http.Server{Handler: handler}
	go v4srv.Serve(v4)
	defer v4srv.Close()

	m := meshtest.New(t, meshtest.Options{})
	ehr := m.AddNode("ehr-server")
	ctx := context.Background()
	if _, err := ehr.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: fmt.Sprintf("http://[::1]:%d/mcp", port), UpstreamUser: "root"}); err != nil {
		t.Fatal(err)
	}
	laptop := grantedNode(t, m, ehr, "ward-laptop", ehrPolicy, "ehr")
	session := opensSession(t, laptop, "ehr")
	if err := session(); err != nil {
		t.Fatalf("before: %v", err)
	}
	v6srv.Close()
	squatter, out := startSquatterOn(t, "::1", port)
	defer stop(squatter)
	mustNotReach(t, out, "a session while another user held [::1]", session)
}

// opensSession is an attempt to open (and close) an MCP session with
// service from node n.
func opensSession(t *testing.T, n *nodeT, service string) func() error {
	return func() error {
		s, err := meshClient(t, n, service)
		if err == nil {
			s.Close()
		}
		return err
	}
}

// mustNotReach checks that attempt fails and that the squatter, whose
// output is out, received nothing.
func mustNotReach(t *testing.T, out *meshtest.SyncBuffer, what string, attempt func() error) {
	t.Helper()
	if err := attempt(); err == nil {
		t.Fatalf("%s went through to the squatter", what)
	}
	time.Sleep(100 * time.Millisecond) // for a request in flight to be printed
	if strings.Contains(out.String(), "GOT") {
		t.Fatalf("%s: the squatter received a request: %s", what, out.String())
	}
}

// stop kills a squatter and waits until it is gone.
func stop(squatter *exec.Cmd) {
	squatter.Process.Kill()
	squatter.Wait()
}

// startSquatter runs, as user nobody, an HTTP server on 127.0.0.1:port
// that prints every request it gets, and waits until it listens.
func startSquatter(t *testing.T, port int) (*exec.Cmd, *meshtest.SyncBuffer) {
	t.Helper()
	return startSquatterOn(t, "127.0.0.1", port)
}

// startSquatterOn is startSquatter on another address than 127.0.0.1.
func startSquatterOn(t *testing.T, host string, port int) (*exec.Cmd, *meshtest.SyncBuffer) {
	t.Helper()
	nodejs, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js) is needed to run the squatter as another user: %v", err)
	}
	script := fmt.Sprintf(`require("http").createServer((q, s) => { console.log("GOT " + q.method + " " + q.url); s.end("{}"); }).listen(%d, %q, () => console.log("listening"));`, port, host)
	squatter := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nodejs, "-e", script)
	out := &meshtest.SyncBuffer{}
	squatter.Stdout, squatter.Stderr = out, out
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { squatter.Process.Kill(); squatter.Wait() })
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return squatter, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the squatter never listened: %s", out.String())
		}
	}
}

// serveOn serves handler on 127.0.0.1:port once the port comes free.
func serveOn(t *testing.T, port int, handler http.Handler) *http.Server {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the port did not come free: %v", err)
		}
	}
	back := &http.Server{Handler: handler}
	go back.Serve(ln)
	t.Cleanup(func() { back.Close() })
	return back
}

// freeLoopbackPort is a port nothing listens on at 127.0.0.1 just now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
