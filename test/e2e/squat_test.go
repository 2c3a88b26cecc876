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
func TestAnotherUserCannotTakeAnUpstreamsPort(t *testing.T) {
	netnstest.RequireRoot(t) // to run the squatter as another user
	nodejs, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js) is needed to run the squatter as another user: %v", err)
	}
	srv := sdk.NewServer(&sdk.Implementation{Name: "ehr", Version: "1.0"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "read_chart"}, func(_ context.Context, _ *sdk.CallToolRequest, in chartArgs) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "chart of " + in.Patient}}}, nil, nil
	})
	handler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{Stateless: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	upstream := &http.Server{Handler: handler}
	go upstream.Serve(ln)

	m := meshtest.New(t, meshtest.Options{})
	ehr := m.AddNode("ehr-server")
	if _, err := ehr.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: "http://" + addr + "/mcp"}); err != nil {
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
	script := fmt.Sprintf(`require("http").createServer((q, s) => { console.log("GOT " + q.method + " " + q.url); s.end("{}"); }).listen(%d, "127.0.0.1", () => console.log("listening"));`, port)
	squatter := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nodejs, "-e", script)
	out := &meshtest.SyncBuffer{}
	squatter.Stdout, squatter.Stderr = out, out
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { squatter.Process.Kill(); squatter.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the squatter never listened: %s", out.String())
		}
	}
	if err := call(); err == nil {
		t.Fatal("a call went through while another user held the upstream's port")
	}
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(out.String(), "GOT") {
		t.Fatalf("the squatter received a request: %s", out.String())
	}

	// The squatter goes, the real server comes back: served again.
	squatter.Process.Kill()
	squatter.Wait()
	var ln2 net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln2, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the port did not come free: %v", err)
		}
	}
	back := &http.Server{Handler: handler}
	go back.Serve(ln2)
	defer back.Close()
	if err := call(); err != nil {
		t.Fatalf("after the real server came back: %v", err)
	}
}
