package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestConnectIsAnMCPServerForDesktopClients does what Claude Desktop or
// Cursor does with `mcpmesh connect`: launch it as a stdio MCP server and
// talk to it with an MCP client (the official Go SDK). Behind it: a real
// node, the mesh, a serving node whose `mcpmesh serve --stdio` runs
// @modelcontextprotocol/server-everything from npm, and the policy.
func TestConnectIsAnMCPServerForDesktopClients(t *testing.T) {
	everything := meshtest.EverythingBin(t)
	c, dir := newCoordinator(t)
	url := "https://" + readURL(t, dir)
	srvState, agentState := filepath.Join(dir, "srv"), filepath.Join(dir, "agent")
	c.start("srv", "up", "--coordinator", url, "--token", strings.TrimSpace(c.ok("token", "create").stdout), "--state", srvState, "--hostname", "tools-server")
	c.start("agent", "up", "--coordinator", url, "--token", strings.TrimSpace(c.ok("token", "create").stdout), "--state", agentState, "--hostname", "agent")
	waitFor(t, "both nodes up", func() bool {
		return c.run("status", "--state", srvState).code == 0 && c.run("status", "--state", agentState).code == 0
	})
	c.ok("serve", "everything", "--stdio", everything, "--state", srvState)
	pol := filepath.Join(dir, "acl.hujson")
	os.WriteFile(pol, []byte(`{"grants": [{"src": ["node:agent"], "dst": ["svc:everything"], "tools": ["echo"]}]}`), 0o644)
	c.ok("policy", "apply", pol)
	waitFor(t, "the agent's catalog", func() bool {
		return strings.Contains(c.run("services", "list", "--state", agentState).stdout, "everything")
	})

	// Without a grant the error is clear and immediate.
	if r := c.run("connect", "nope", "--state", agentState); r.code != 1 || !strings.Contains(r.stderr, `service "nope" is not available`) {
		t.Fatalf("connect to an unknown service: %+v", r)
	}

	cmd := exec.Command(bin, "connect", "everything", "--state", agentState)
	cmd.Env = c.env
	client := sdk.NewClient(&sdk.Implementation{Name: "desktop", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tools, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	if !slices.Equal(names, []string{"echo"}) {
		t.Fatalf("tools through connect: %v, want [echo]", names)
	}
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "from the desktop"}})
	if err != nil || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, "from the desktop") {
		t.Fatalf("echo: %v %+v", err, res)
	}
	if _, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "get-env", Arguments: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("get-env: %v", err)
	}
	// The denial is in the audit trail.
	waitFor(t, "the audit event", func() bool {
		return strings.Contains(c.run("audit", "tail", "--caller", "node:agent", "--decision", "deny").stdout, "get-env")
	})
}
