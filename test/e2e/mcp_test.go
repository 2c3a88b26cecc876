package e2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// ehrUpstream is a real MCP server (the official Go SDK) on loopback with
// a read tool and a destructive one; it counts what actually ran.
type ehrUpstream struct {
	URL     string
	reads   atomic.Int32
	deletes atomic.Int32
}

type chartArgs struct {
	Patient string `json:"patient"`
}

func startEHR(t testing.TB) *ehrUpstream {
	t.Helper()
	u := &ehrUpstream{}
	srv := sdk.NewServer(&sdk.Implementation{Name: "ehr", Version: "1.0"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "read_chart", Description: "read a chart"}, func(_ context.Context, _ *sdk.CallToolRequest, in chartArgs) (*sdk.CallToolResult, any, error) {
		u.reads.Add(1)
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "chart of " + in.Patient}}}, nil, nil
	})
	sdk.AddTool(srv, &sdk.Tool{Name: "delete_chart", Description: "delete a chart"}, func(_ context.Context, _ *sdk.CallToolRequest, in chartArgs) (*sdk.CallToolResult, any, error) {
		u.deletes.Add(1)
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "deleted " + in.Patient}}}, nil, nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	u.URL = "http://" + ln.Addr().String() + "/mcp"
	return u
}

const ehrPolicy = `{
  "groups": { "group:clinical": ["node:ward-laptop"] },
  "tagOwners": { "tag:phi": ["node:ehr-server"] },
  "grants": [
    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*"] },
  ],
}`

// meshClient connects the official SDK client from node n, through its
// LocalAPI forwarder (what `mcpmesh connect` uses), to service name.
func meshClient(t *testing.T, n *node.Node, name string) (*sdk.ClientSession, error) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/localapi/v0/mcp/{service}", n.MCPForwarder())
	local := httptest.NewServer(mux)
	t.Cleanup(local.Close)
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1.0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: local.URL + localapi.MCPPath(name), MaxRetries: -1}, nil)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// grantedClient adds the caller node, applies policy, waits until the
// caller sees srv and service and srv holds the rules, and connects the
// SDK client from the caller to service.
func grantedClient(t *testing.T, m *meshtest.Mesh, srv *nodeT, caller, policy, service string) (*nodeT, *sdk.ClientSession) {
	t.Helper()
	n := grantedNode(t, m, srv, caller, policy, service)
	s, err := meshClient(t, n, service)
	if err != nil {
		t.Fatal(err)
	}
	return n, s
}

// grantedNode adds the node caller, applies policy, and waits until the
// node sees service on srv and srv holds its rules.
func grantedNode(t *testing.T, m *meshtest.Mesh, srv *nodeT, caller, policy, service string) *nodeT {
	t.Helper()
	n := m.AddNode(caller)
	applyPolicy(t, m, policy)
	m.WaitPeers(n, srv.Name())
	m.WaitCatalog(n, service)
	waitFor(t, "the server's rules", func() bool { p, _ := srv.Policy(); return p != nil })
	return n
}

func serveEHR(t *testing.T, m *meshtest.Mesh) (*ehrUpstream, *nodeT) {
	t.Helper()
	up := startEHR(t)
	srv := m.AddNode("ehr-server")
	if _, err := srv.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up.URL, Tags: []string{"tag:phi"}}); err != nil {
		t.Fatal(err)
	}
	return up, srv
}

func TestMeshOnlyServiceEnforcesToolLevelPolicy(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	up, srv := serveEHR(t, m)
	laptop, s := grantedClient(t, m, srv, "ward-laptop", ehrPolicy, "ehr")
	ctx := context.Background()
	tools, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) != 1 || tools.Tools[0].Name != "read_chart" {
		var names []string
		for _, tl := range tools.Tools {
			names = append(names, tl.Name)
		}
		t.Fatalf("tools/list shows %v to the laptop, want only read_chart", names)
	}
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "read_chart", Arguments: map[string]any{"patient": "p-17"}})
	if err != nil || res.IsError {
		t.Fatalf("allowed call: %v %+v", err, res)
	}
	if txt := res.Content[0].(*sdk.TextContent).Text; txt != "chart of p-17" {
		t.Fatalf("allowed call answered %q", txt)
	}
	_, err = s.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"patient": "p-17"}})
	if err == nil || !strings.Contains(err.Error(), "delete_chart") || !strings.Contains(err.Error(), "default deny") {
		t.Fatalf("denied call: err = %v; want an error naming the tool and the reason", err)
	}
	if up.deletes.Load() != 0 || up.reads.Load() != 1 {
		t.Fatalf("upstream ran %d reads and %d deletes; want 1 and 0", up.reads.Load(), up.deletes.Load())
	}

	// The decisions are in the audit trail, with the rule and without the
	// arguments.
	var evs []api.AuditEvent
	waitFor(t, "audit events at the coordinator", func() bool {
		evs, _ = m.Admin.Audit(ctx, api.AuditQuery{Service: "ehr", Tool: "delete_chart", Decision: "deny"})
		return len(evs) == 1
	})
	if evs[0].Caller != laptop.ID() || !strings.HasPrefix(evs[0].ArgsDigest, mcp.DigestPrefix) || evs[0].Node != "ehr-server" {
		t.Fatalf("audit event: %+v", evs[0])
	}
	// The digest tells the patient only to whoever holds the serving
	// node's key; with it, the arguments are checked.
	key, err := node.ReadDigestKey(filepath.Join(m.NodeDir("ehr-server"), node.DigestKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for patient, want := range map[string]bool{"p-17": true, "p-18": false} {
		d, err := mcp.ArgsDigest(key, []byte(`{"patient": "`+patient+`"}`))
		if err != nil || (d == evs[0].ArgsDigest) != want {
			t.Errorf("digest of patient %s: %s, %v; the event has %s", patient, d, err, evs[0].ArgsDigest)
		}
	}

	// A policy change takes effect on the open session.
	applyPolicy(t, m, strings.Replace(ehrPolicy, `"read_*"`, `"read_*", "delete_chart"`, 1))
	waitFor(t, "the new rules on the server", func() bool {
		_, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"patient": "p-1"}})
		return err == nil
	})
	if up.deletes.Load() != 1 {
		t.Fatalf("after the grant, %d deletes ran", up.deletes.Load())
	}
}

func TestNodeWithoutGrantAndUnenrolledProcessCannotReachTheService(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	up, srv := serveEHR(t, m)
	laptop := m.AddNode("ward-laptop")
	outsider := m.AddNode("outsider")
	applyPolicy(t, m, ehrPolicy)
	m.WaitPeers(laptop, "ehr-server")
	m.WaitPeers(outsider)

	// Enrolled, but no grant: the service is not in its catalog and there
	// is no route to the server.
	if _, err := meshClient(t, outsider, "ehr"); err == nil {
		t.Fatal("the outsider initialized a session")
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, localapi.MCPPath("ehr"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
	req.SetPathValue("service", "ehr")
	outsider.MCPForwarder().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no grant lets outsider call it") {
		t.Fatalf("outsider's forwarder answered %d %s", rec.Code, rec.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := outsider.Tunnel().DialContext(ctx, "tcp", net.JoinHostPort(srv.Addresses()[0].String(), strconv.Itoa(node.MCPPort))); err == nil {
		c.Close()
		t.Fatal("the outsider opened a connection to the server's MCP proxy")
	}

	// A process on the serving host that is not enrolled: the proxy
	// listens only inside the tunnel, so none of the host's own addresses
	// answers on its port. (Mesh addresses are not dialled from the host:
	// they are not this machine's, and tests send nothing off the machine.)
	hostAddrs := []string{"127.0.0.1"}
	if ifas, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifas {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				hostAddrs = append(hostAddrs, ipn.IP.String())
			}
		}
	}
	for _, addr := range hostAddrs {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(node.MCPPort)), 500*time.Millisecond)
		if err == nil {
			c.Close()
			t.Errorf("an unenrolled process reached %s:%d", addr, node.MCPPort)
		}
	}
	if up.reads.Load()+up.deletes.Load() != 0 {
		t.Fatal("the upstream ran a tool")
	}
}

// startEHRB starts the EHR upstream for a benchmark and returns its URL.
func startEHRB(b *testing.B) string { return startEHR(b).URL }

func policySource(src string) api.PolicySource {
	return api.PolicySource{Filename: "acl.hujson", Source: []byte(src)}
}
