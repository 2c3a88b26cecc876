package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/localapi"
)

const demoPolicy = `{
  "groups":    { "group:clinical": ["node:ward-7-laptop"] },
  "tagOwners": { "tag:billing": ["group:clinical"], "tag:phi": ["group:clinical", "node:ehr-server"] },
  "grants": [
    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*", "search_patients"] },
    { "src": ["tag:billing"],    "dst": ["svc:ehr"], "tools": ["get_invoice"], "when": "args.amount < 10000" },
  ],
  "tests": [
    { "src": "node:ward-7-laptop", "dst": "svc:ehr", "allow": ["read_chart"], "deny": ["delete_chart"] },
  ],
}`

type demoArgs struct {
	Patient string  `json:"patient,omitempty"`
	Amount  float64 `json:"amount,omitempty"`
}

// startDemoEHR runs a real MCP server (the official Go SDK) on loopback.
func startDemoEHR() (string, func(), error) {
	srv := sdk.NewServer(&sdk.Implementation{Name: "ehr", Version: "1.0"}, nil)
	tool := func(name string, answer func(demoArgs) string) {
		sdk.AddTool(srv, &sdk.Tool{Name: name, Description: name}, func(_ context.Context, _ *sdk.CallToolRequest, in demoArgs) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: answer(in)}}}, nil, nil
		})
	}
	tool("read_chart", func(a demoArgs) string { return "chart of " + a.Patient + ": BP 120/80" })
	tool("delete_chart", func(a demoArgs) string { return "deleted the chart of " + a.Patient })
	tool("get_invoice", func(a demoArgs) string { return fmt.Sprintf("invoice for %s: %.0f EUR", a.Patient, a.Amount) })
	tool("search_patients", func(demoArgs) string { return "3 patients match" })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/mcp", func() { hs.Close() }, nil
}

// demoClient is what `mcpmesh connect` gives an agent: the official SDK
// client speaking to a mesh service through its own node.
func demoClient(ctx context.Context, n *node.Node, svc string) (*sdk.ClientSession, func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/localapi/v0/mcp/{service}", n.MCPForwarder())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	c := sdk.NewClient(&sdk.Implementation{Name: "agent-on-" + n.Name(), Version: "1.0"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: "http://" + ln.Addr().String() + localapi.MCPPath(svc), MaxRetries: -1}, nil)
	if err != nil {
		hs.Close()
		return nil, nil, err
	}
	return s, func() { s.Close(); hs.Close() }, nil
}

func (d *demo) mcpStory(ctx context.Context, admin *adminclient.Client, server, laptop, bot *node.Node) error {
	d.step("4. A real MCP server, served mesh-only, with tool-level policy")
	upstream, stop, err := startDemoEHR()
	if err != nil {
		return err
	}
	defer stop()
	res, err := server.Serve(ctx, localapi.ServeRequest{Name: "ehr", Upstream: upstream, Tags: []string{"tag:phi"}})
	if err != nil {
		return err
	}
	d.say("mcpmesh serve ehr --upstream %s --tags tag:phi", upstream)
	d.say("  → reachable only at %s, inside the mesh", res.Endpoint)
	applied, err := admin.ApplyPolicy(ctx, api.PolicySource{Filename: "acl.hujson", Source: []byte(demoPolicy)})
	if err != nil {
		return err
	}
	d.say("mcpmesh policy apply acl.hujson → v%d (%d grants, %d embedded tests passed)", applied.Version, applied.Grants, applied.Tests)
	for _, l := range strings.Split(demoPolicy, "\n")[4:6] {
		d.say("  %s", strings.TrimSpace(l))
	}
	inCatalog := func(n *node.Node) bool {
		for _, svc := range n.Netmap().Catalog {
			if svc.Name == "ehr" {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if p, _ := server.Policy(); p != nil && inCatalog(laptop) && inCatalog(bot) {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the policy did not reach the nodes in time")
		}
		time.Sleep(10 * time.Millisecond)
	}

	s, closeS, err := demoClient(ctx, laptop, "ehr")
	if err != nil {
		return fmt.Errorf("ward-7-laptop → ehr: %w", err)
	}
	defer closeS()
	tools, err := s.ListTools(ctx, nil)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range tools.Tools {
		names = append(names, t.Name)
	}
	d.say("ward-7-laptop tools/list: %s   (the server has 4 tools; the caller sees what it may call)", strings.Join(names, ", "))
	d.call(ctx, s, "ward-7-laptop", "read_chart", map[string]any{"patient": "p-0042"})
	d.call(ctx, s, "ward-7-laptop", "delete_chart", map[string]any{"patient": "p-0042"})

	bs, closeB, err := demoClient(ctx, bot, "ehr")
	if err != nil {
		return fmt.Errorf("billing-bot → ehr: %w", err)
	}
	defer closeB()
	d.call(ctx, bs, "billing-bot", "get_invoice", map[string]any{"patient": "p-0042", "amount": 420})
	d.call(ctx, bs, "billing-bot", "get_invoice", map[string]any{"patient": "p-0042", "amount": 25000})

	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(node.MCPPort)), time.Second); err == nil {
		c.Close()
		d.say("WARNING: something on this host listens on the proxy's port")
	} else {
		d.say("an unenrolled process on this host, to the proxy's port (127.0.0.1:%d): %s", node.MCPPort, shorten(err))
	}

	// The audit trail, as `mcpmesh audit tail --service ehr` shows it.
	var evs []api.AuditEvent
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if evs, err = admin.Audit(ctx, api.AuditQuery{Service: "ehr", Decision: "deny"}); err == nil && len(evs) >= 2 {
			break
		}
	}
	d.say("mcpmesh audit tail --service ehr --decision deny")
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		d.say("  %s  %s  %-40s  %-12s  %s  (args %s…)", e.Time.Format("15:04:05.000"), e.Decision, e.Caller, e.Tool, e.Reason, e.ArgsDigest[:min(len(e.ArgsDigest), 20)])
	}
	return nil
}

func (d *demo) call(ctx context.Context, s *sdk.ClientSession, who, tool string, args map[string]any) {
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	switch {
	case err != nil:
		d.say("%-14s %-13s DENIED  %s", who, tool, shortRPC(err))
	case res.IsError:
		d.say("%-14s %-13s error   %v", who, tool, res.Content)
	default:
		d.say("%-14s %-13s allowed %q", who, tool, res.Content[0].(*sdk.TextContent).Text)
	}
}

// shortRPC keeps the proxy's message from the SDK's wrapped error.
func shortRPC(err error) string {
	s := err.Error()
	if i := strings.Index(s, "denied for"); i >= 0 {
		if j := strings.LastIndex(s[:i], "tool "); j >= 0 {
			return s[j:]
		}
	}
	return s
}
