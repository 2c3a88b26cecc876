package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

const everythingPolicy = `{
  "groups": { "group:agents": ["node:agent"] },
  "grants": [
    { "src": ["group:agents"], "dst": ["svc:everything"], "tools": ["echo", "get-sum"] },
  ],
}`

// startEverythingHTTP runs the npm server in Streamable HTTP mode. It binds
// every interface, as shadow servers on laptops do.
//
// The server takes its port from the environment, so the port is found
// free first and may be taken by someone else (another test's connection)
// before the server binds it; then the server says so and exits, and a
// new port is tried.
func startEverythingHTTP(t *testing.T, bin string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		url, inUse := tryEverythingHTTP(t, bin)
		if !inUse {
			return url
		}
		if attempt == 5 {
			t.Fatal("server-everything found its port taken five times")
		}
	}
}

// tryEverythingHTTP starts the server on a port found free, and reports
// whether the port was taken before the server could bind it.
func tryEverythingHTTP(t *testing.T, bin string) (string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", ":0") // free on every address, as the server binds
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "streamableHttp")
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// Node.js loads the whole server at start: on a loaded CI machine that
	// takes seconds, so the wait is generous and bounded.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			if strings.Contains(out.String(), "already in use") {
				return "", true
			}
			t.Fatalf("server-everything exited at start: %v\n%s", err, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			err := <-exited // its output is complete only once it has exited
			t.Fatalf("server-everything did not listen on %s within a minute: %v\n%s", addr, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return "http://" + addr + "/mcp", false
}

func TestServerEverythingFromNPMThroughTheMesh(t *testing.T) {
	bin := meshtest.EverythingBin(t)
	for _, mode := range []string{"http", "stdio"} {
		t.Run(mode, func(t *testing.T) {
			m := meshtest.New(t, meshtest.Options{})
			srv := m.AddNode("tools-server")
			req := localapi.ServeRequest{Name: "everything", Stdio: bin}
			if mode == "http" {
				req = localapi.ServeRequest{Name: "everything", Upstream: startEverythingHTTP(t, bin)}
			}
			if _, err := srv.Serve(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			_, s := grantedClient(t, m, srv, "agent", everythingPolicy, "everything")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tools, err := s.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tl := range tools.Tools {
				names = append(names, tl.Name)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"echo", "get-sum"}) {
				t.Fatalf("tools/list through the mesh: %v, want [echo get-sum]", names)
			}
			res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi from the mesh"}})
			if err != nil || res.IsError || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, "hi from the mesh") {
				t.Fatalf("echo: %v %+v", err, res)
			}
			res, err = s.CallTool(ctx, &sdk.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 2, "b": 40}})
			if err != nil || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, "42") {
				t.Fatalf("get-sum: %v %+v", err, res)
			}
			_, err = s.CallTool(ctx, &sdk.CallToolParams{Name: "get-env", Arguments: map[string]any{}})
			if err == nil || !strings.Contains(err.Error(), "get-env") {
				t.Fatalf("get-env must be refused by name: %v", err)
			}
		})
	}
}
