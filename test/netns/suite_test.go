// Package netns proves, the way an attacker would try, that an MCP server
// served through mcpmesh is reachable through the mesh and nowhere else.
// It runs the real binary: a coordinator, a server node, an agent node and
// a node without a grant, each in its own network namespace on a shared
// LAN bridge, nodes in kernel TUN mode, plus an outsider on the same LAN
// and a laptop node in userspace mode.
// It needs root, and runs (never skips) in CI.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

var bin string

func TestMain(m *testing.M) { os.Exit(meshtest.RunWithBinary(m, &bin)) }

const (
	coordAddr    = "10.97.0.1:7443"
	coordURL     = "https://" + coordAddr
	serverLAN4   = "10.97.0.2"
	serverLAN6   = "fd00:97::2"
	upstreamPort = "9000"
	proxyPort    = "7811"
)

// lab is the namespaces and the processes running in them.
type lab struct {
	t        *testing.T
	dir      string
	env      []string
	lan      *netnstest.NS
	coord    *netnstest.NS
	server   *netnstest.NS
	agent    *netnstest.NS
	stranger *netnstest.NS
	outsider *netnstest.NS
	laptop   *netnstest.NS
}

func newLab(t *testing.T) *lab {
	t.Helper()
	netnstest.RequireRoot(t)
	dir := t.TempDir()
	l := &lab{t: t, dir: dir, env: append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(dir, "admin.json"), "MCPMESH_STATE=", "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	l.lan = netnstest.New(t, "ns", "lan")
	l.lan.IP("link", "add", "br0", "type", "bridge")
	l.lan.IP("link", "set", "br0", "up")
	for i, p := range []**netnstest.NS{&l.coord, &l.server, &l.agent, &l.stranger, &l.outsider, &l.laptop} {
		role := []string{"coord", "server", "agent", "stranger", "outsider", "laptop"}[i]
		ns := netnstest.New(t, "ns", role)
		netnstest.Link(t, l.lan, "v-"+role, ns, "eth0")
		l.lan.IP("link", "set", "v-"+role, "master", "br0")
		ns.IP("addr", "add", fmt.Sprintf("10.97.0.%d/24", i+1), "dev", "eth0")
		ns.IP("addr", "add", fmt.Sprintf("fd00:97::%d/64", i+1), "dev", "eth0", "nodad")
		*p = ns
	}
	return l
}

// run runs the binary in ns to completion.
func (l *lab) run(ns *netnstest.NS, args ...string) (stdout, stderr string, err error) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	cmd.Env = l.env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	return so.String(), se.String(), err
}

func (l *lab) ok(ns *netnstest.NS, args ...string) string {
	l.t.Helper()
	so, se, err := l.run(ns, args...)
	if err != nil {
		l.t.Fatalf("mcpmesh %s (in %s): %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), ns.Name, err, so, se)
	}
	return so
}

// start runs a long-lived process in ns; it gets SIGINT (then SIGKILL) when
// the test ends, before the namespaces go.
func (l *lab) start(ns *netnstest.NS, name string, env []string, argv ...string) *exec.Cmd {
	l.t.Helper()
	cmd := ns.Command(argv[0], argv[1:]...)
	cmd.Env = append(append([]string(nil), l.env...), env...)
	logf, err := os.Create(filepath.Join(l.dir, name+".log"))
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	l.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if l.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			l.t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

func waitFor(t *testing.T, what string, bound time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCoordinator runs the coordinator and waits until it accepts.
func (l *lab) startCoordinator(data string) *exec.Cmd {
	l.t.Helper()
	cmd := l.start(l.coord, "coordinator", nil, bin, "coordinator", "run", "--data", data, "--listen", coordAddr)
	waitFor(l.t, "the coordinator to listen", 20*time.Second, func() bool {
		return l.coord.Dial(coordAddr, "", time.Second) == nil
	})
	return cmd
}

// up starts a node in TUN mode in ns and waits for its LocalAPI.
func (l *lab) up(ns *netnstest.NS, name, token string) string {
	l.t.Helper()
	return l.upMode(ns, name, token, "--tun")
}

// upMode starts a node with the given mode flags ("--tun", or none for
// userspace mode).
func (l *lab) upMode(ns *netnstest.NS, name, token string, mode ...string) string {
	l.t.Helper()
	state := filepath.Join(l.dir, name)
	args := append([]string{bin, "up"}, mode...)
	l.start(ns, name, nil, append(args, "--coordinator", coordURL, "--token", token, "--state", state, "--hostname", name)...)
	waitFor(l.t, name+" to come up", 30*time.Second, func() bool {
		_, _, err := l.run(ns, "status", "--state", state)
		return err == nil
	})
	return state
}

var addrRE = regexp.MustCompile(`mesh IPs:\s+(\S+), (\S+)`)

// meshAddrs reads a node's mesh addresses from `mcpmesh status`.
func (l *lab) meshAddrs(ns *netnstest.NS, state string) (v4, v6 netip.Addr) {
	l.t.Helper()
	st := l.ok(ns, "status", "--state", state)
	m := addrRE.FindStringSubmatch(st)
	if m == nil {
		l.t.Fatalf("no mesh IPs in status:\n%s", st)
	}
	v4, v6 = netip.MustParseAddr(m[1]), netip.MustParseAddr(m[2])
	if !v4.Is4() || !v6.Is6() {
		l.t.Fatalf("mesh IPs %s, %s: want an IPv4 and an IPv6 address", v4, v6)
	}
	return v4, v6
}

// initialize POSTs an MCP initialize to url from ns, as an attacker's
// client would, and returns the server's answer, or an error when there is
// no MCP answer.
func initialize(ns *netnstest.NS, url string, timeout time.Duration) (string, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"attacker","version":"1"}}}`
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := ns.HTTPClient(timeout).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "serverInfo") {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

const policy = `{
  "grants": [
    { "src": ["node:agent", "node:laptop"], "dst": ["svc:ehr"], "tools": ["echo"] },
  ],
  "tests": [
    { "src": "node:agent", "dst": "svc:ehr", "allow": ["echo"], "deny": ["get-sum"] },
    { "src": "node:stranger", "dst": "svc:ehr", "deny": ["echo"] },
  ],
}`

// TestOnlyTheMeshReachesAServedMCPServer is the proof of the product's
// claim, from every side: the agent's allowed call works and its denied
// one is refused; an outsider on the LAN reaches neither the upstream (a
// shadow server bound to 0.0.0.0, locked down) nor the proxy, by any
// address of the server, even with the mesh prefixes routed to it over
// the LAN; an enrolled node without a grant gets nowhere; killing the
// coordinator breaks no established call; revoking the agent cuts it off.
func TestOnlyTheMeshReachesAServedMCPServer(t *testing.T) {
	everythingBin := meshtest.EverythingBin(t)
	l := newLab(t)

	// The control plane.
	data := filepath.Join(l.dir, "coord")
	l.ok(l.coord, "coordinator", "init", "--data", data, "--trust-domain", "hospital.internal")
	coord := l.startCoordinator(data)
	admin := []string{"--coordinator", coordURL, "--data", data}
	token := func(tags ...string) string {
		args := append([]string{"token", "create", "--ttl", "10m"}, admin...)
		if len(tags) > 0 {
			args = append(args, "--tags", strings.Join(tags, ","))
		}
		return strings.TrimSpace(l.ok(l.coord, args...))
	}
	polFile := filepath.Join(l.dir, "acl.hujson")
	if err := os.WriteFile(polFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	l.ok(l.coord, append([]string{"policy", "apply", polFile}, admin...)...)

	// The server's host: a shadow MCP server on every address, and the node.
	l.start(l.server, "server-everything", []string{"PORT=" + upstreamPort}, everythingBin, "streamableHttp")
	waitFor(t, "server-everything to listen", 60*time.Second, func() bool {
		return l.server.Dial("127.0.0.1:"+upstreamPort, "", time.Second) == nil
	})
	shadow4 := "http://" + serverLAN4 + ":" + upstreamPort + "/mcp"
	shadow6 := "http://[" + serverLAN6 + "]:" + upstreamPort + "/mcp"
	// Before it is served with --lockdown, the shadow server answers the
	// outsider: the attack works, so the test can fail.
	if _, err := initialize(l.outsider, shadow4, 5*time.Second); err != nil {
		t.Fatalf("the outsider cannot reach the shadow server even before lockdown (%v); the test proves nothing", err)
	}
	serverState := l.up(l.server, "server", token("tag:phi"))
	so, se, err := l.run(l.server, "serve", "ehr", "--upstream", "http://127.0.0.1:"+upstreamPort+"/mcp", "--lockdown", "--state", serverState)
	if err != nil || !strings.Contains(se, "locked down") {
		t.Fatalf("serve --lockdown: %v\nstdout: %s\nstderr: %s", err, so, se)
	}
	mesh4, mesh6 := l.meshAddrs(l.server, serverState)
	if st := l.ok(l.server, "status", "--state", serverState); !strings.Contains(st, "data plane:  interface mcpmesh0 (") || !strings.Contains(st, "firewall:    table inet mcpmesh in place") {
		t.Errorf("the server's status does not show its interface and firewall:\n%s", st)
	}

	// The exposure audit on the server's host sees the shadow server,
	// served as ehr and locked down.
	exp := l.ok(l.server, "audit", "exposure", "--state", serverState)
	if !regexp.MustCompile(`:` + upstreamPort + `\s.*ehr\s+locked down`).MatchString(exp) {
		t.Errorf("audit exposure on the server does not show port %s served as ehr and locked down:\n%s", upstreamPort, exp)
	}

	agentState := l.up(l.agent, "agent", token())
	// A shadow MCP server on the agent's laptop, bound to every address
	// (Go makes that a dual-stack socket on [::]).
	shadow := sdk.NewServer(&sdk.Implementation{Name: "laptop-shadow", Version: "0.1"}, nil)
	var shadowLn net.Listener
	l.agent.Do(func() { shadowLn, err = net.Listen("tcp", "0.0.0.0:9100") })
	if err != nil {
		t.Fatal(err)
	}
	shadowSrv := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return shadow }, nil)}
	go shadowSrv.Serve(shadowLn)
	defer shadowSrv.Close()
	exp = l.ok(l.agent, "audit", "exposure", "--state", agentState)
	if !regexp.MustCompile(`(0\.0\.0\.0|\[::\]):9100\s.*laptop-shadow 0\.1\s+streamable-http\s+-\s+EXPOSED`).MatchString(exp) {
		t.Errorf("audit exposure on the agent does not flag the shadow server:\n%s", exp)
	}
	all := l.ok(l.coord, append([]string{"audit", "exposure", "--all"}, admin...)...)
	for _, re := range []string{`agent\s+(0\.0\.0\.0|\[::\]):9100\s.*EXPOSED`, `server\s+\S+:` + upstreamPort + `\s.*locked down`} {
		if !regexp.MustCompile(re).MatchString(all) {
			t.Errorf("audit exposure --all lacks %s:\n%s", re, all)
		}
	}

	strangerState := l.up(l.stranger, "stranger", token())
	waitFor(t, "the agent to see the service", 20*time.Second, func() bool {
		so, _, err := l.run(l.agent, "services", "list", "--state", agentState)
		return err == nil && strings.Contains(so, "ehr")
	})

	// The agent, through `mcpmesh connect` as an MCP client would launch it.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	connect := func() *sdk.ClientSession {
		t.Helper()
		cmd := l.agent.Command(bin, "connect", "ehr", "--state", agentState)
		cmd.Env = l.env
		s, err := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("connect ehr from the agent: %v", err)
		}
		return s
	}
	s := connect()
	defer s.Close()
	tools, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	if !slices.Equal(names, []string{"echo"}) {
		t.Errorf("the agent's tools/list = %v, want only [echo]", names)
	}
	echo := func(s *sdk.ClientSession, msg string, bound time.Duration) error {
		cctx, ccancel := context.WithTimeout(ctx, bound)
		defer ccancel()
		res, err := s.CallTool(cctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"message": msg}})
		if err != nil {
			return err
		}
		if res.IsError || len(res.Content) == 0 || !strings.Contains(fmt.Sprint(res.Content[0].(*sdk.TextContent).Text), msg) {
			return fmt.Errorf("echo answered %+v", res)
		}
		return nil
	}
	if err := echo(s, "allowed over the mesh", 10*time.Second); err != nil {
		t.Fatalf("the agent's allowed call: %v", err)
	}
	_, err = s.CallTool(ctx, &sdk.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 1, "b": 2}})
	if err == nil || !strings.Contains(err.Error(), "denied") {
		t.Errorf("the agent's denied call (get-sum) = %v, want a denial", err)
	}

	// A laptop in userspace mode calls the same TUN-mode server: the two
	// data planes interoperate (the userspace side's packets must carry
	// checksums the kernel accepts).
	laptopState := l.upMode(l.laptop, "laptop", token())
	waitFor(t, "the laptop to see the service", 20*time.Second, func() bool {
		so, _, err := l.run(l.laptop, "services", "list", "--state", laptopState)
		return err == nil && strings.Contains(so, "ehr")
	})
	lcmd := l.laptop.Command(bin, "connect", "ehr", "--state", laptopState)
	lcmd.Env = l.env
	ls, err := sdk.NewClient(&sdk.Implementation{Name: "laptop", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: lcmd}, nil)
	if err != nil {
		t.Fatalf("connect ehr from the userspace-mode laptop: %v", err)
	}
	if err := echo(ls, "from userspace mode", 10*time.Second); err != nil {
		t.Errorf("the userspace-mode laptop's allowed call to the TUN-mode server: %v", err)
	}
	ls.Close()

	// The outsider on the LAN, by every address of the server.
	l.outsider.IP("route", "add", "100.64.0.0/10", "via", serverLAN4)
	mesh6Net, _ := mesh6.Prefix(48)
	l.outsider.IP("-6", "route", "add", mesh6Net.String(), "via", serverLAN6)
	for _, url := range []string{
		shadow4, shadow6, // the upstream's own port, bound to 0.0.0.0, locked down
		"http://" + serverLAN4 + ":" + proxyPort + "/svc/ehr/mcp", // the proxy is not on the LAN address
		"http://[" + serverLAN6 + "]:" + proxyPort + "/svc/ehr/mcp",
		"http://" + mesh4.String() + ":" + proxyPort + "/svc/ehr/mcp", // the mesh address routed over the LAN
		"http://[" + mesh6.String() + "]:" + proxyPort + "/svc/ehr/mcp",
		"http://" + mesh4.String() + ":" + upstreamPort + "/mcp",
	} {
		if ans, err := initialize(l.outsider, url, 2*time.Second); err == nil {
			t.Errorf("the outsider got an MCP answer from %s: %s", url, ans)
		}
	}

	// An enrolled node with no grant: refused by the CLI, and no path at
	// the network layer either (the server is not its WireGuard peer).
	if _, se, err := l.run(l.stranger, "connect", "ehr", "--state", strangerState); err == nil || !strings.Contains(se, "not available") {
		t.Errorf("connect from the node without a grant: %v, %q; want a clear refusal", err, se)
	}
	for _, url := range []string{
		"http://" + mesh4.String() + ":" + proxyPort + "/svc/ehr/mcp",
		"http://[" + mesh6.String() + "]:" + proxyPort + "/svc/ehr/mcp",
		"http://" + serverLAN4 + ":" + upstreamPort + "/mcp",
	} {
		if ans, err := initialize(l.stranger, url, 2*time.Second); err == nil {
			t.Errorf("the node without a grant got an MCP answer from %s: %s", url, ans)
		}
	}

	// The coordinator dies: established calls, and new sessions, go on.
	if err := coord.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the coordinator to die", 10*time.Second, func() bool {
		return l.coord.Dial(coordAddr, "", 300*time.Millisecond) != nil
	})
	if err := echo(s, "coordinator is gone", 10*time.Second); err != nil {
		t.Errorf("a call in the established session after the coordinator died: %v", err)
	}
	s2 := connect()
	if err := echo(s2, "new session without a coordinator", 10*time.Second); err != nil {
		t.Errorf("a new session after the coordinator died: %v", err)
	}
	s2.Close()

	// It comes back; the admin revokes the agent, which is cut off.
	l.startCoordinator(data)
	l.ok(l.coord, append([]string{"nodes", "revoke", "agent"}, admin...)...)
	waitFor(t, "the revoked agent to be cut off", 30*time.Second, func() bool {
		return echo(s, "after revocation", 2*time.Second) != nil
	})
	if ans, err := initialize(l.agent, "http://"+mesh4.String()+":"+proxyPort+"/svc/ehr/mcp", 2*time.Second); err == nil {
		t.Errorf("the revoked agent still gets an MCP answer from the proxy: %s", ans)
	}
}
