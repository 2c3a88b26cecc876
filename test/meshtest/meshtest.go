// Package meshtest runs a whole mcpmesh in one test process: a real
// coordinator (its SQLite store in a temp dir, HTTPS with mTLS on loopback)
// and N real nodes with userspace WireGuard tunnels over loopback UDP. No
// root, no mocks: later issues build their end-to-end tests on it.
package meshtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Options tune a mesh.
type Options struct {
	// SVIDTTL shortens node certificates to exercise renewal.
	SVIDTTL time.Duration
	// NetmapTTL shortens netmap lifetimes to exercise their renewal and
	// expiry.
	NetmapTTL time.Duration
	// Logger; nil logs to the test at level Warn and above when -v is off.
	Logger *slog.Logger
	// AuditRetention is the coordinator's (zero keeps every event).
	AuditRetention time.Duration
	// AuditFsyncEvery is every node's (node.Config): zero, the strictest,
	// holds each answer until its audit event is fsynced; `mcpmesh up`
	// runs with auditlog.DefaultSyncEvery.
	AuditFsyncEvery time.Duration
}

// Mesh is a coordinator and its nodes.
type Mesh struct {
	t     testing.TB
	opts  Options
	dir   string
	addr  string // the coordinator's listen address, kept across restarts
	URL   string
	Admin *adminclient.Client
	log   *slog.Logger

	mu     sync.Mutex
	coord  *coordinator.Server
	cancel context.CancelFunc
	served chan struct{}
	nodes  map[string]*node.Node
}

// New starts a coordinator with a fresh trust domain.
func New(t testing.TB, opts Options) *Mesh {
	t.Helper()
	dir := t.TempDir()
	m := &Mesh{t: t, opts: opts, dir: dir, nodes: map[string]*node.Node{}, log: opts.Logger}
	if m.log == nil {
		// MCPMESH_TEST_LOG=debug shows everything, wireguard-go included.
		level := slog.LevelWarn
		_ = level.UnmarshalText([]byte(os.Getenv("MCPMESH_TEST_LOG")))
		m.log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	}
	if err := coordinator.Init(filepath.Join(dir, "coord"), "test.mcpmesh", time.Now()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	m.URL = "https://" + m.addr
	m.startCoordinator(ln)
	cred, err := adminclient.LoadCredential(filepath.Join(dir, "coord", coordinator.FileAdmin))
	if err != nil {
		t.Fatal(err)
	}
	m.Admin, err = adminclient.New(m.URL, cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// DataDir is the coordinator's data directory.
func (m *Mesh) DataDir() string { return filepath.Join(m.dir, "coord") }

func (m *Mesh) startCoordinator(ln net.Listener) {
	m.t.Helper()
	srv, err := coordinator.Open(context.Background(), m.DataDir(), coordinator.Config{Logger: m.log.With("c", "coordinator"), SVIDTTL: m.opts.SVIDTTL, NetmapTTL: m.opts.NetmapTTL,
		AuditRetention: m.opts.AuditRetention})
	if err != nil {
		ln.Close()
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ctx, ln); err != nil {
			m.t.Errorf("coordinator: %v", err)
		}
	}()
	m.mu.Lock()
	m.coord, m.cancel, m.served = srv, cancel, served
	m.mu.Unlock()
}

// Coordinator is the running coordinator (nil while stopped).
func (m *Mesh) Coordinator() *coordinator.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.coord
}

// StopCoordinator stops the coordinator; nodes keep their tunnels.
func (m *Mesh) StopCoordinator() {
	m.mu.Lock()
	srv, cancel, served := m.coord, m.cancel, m.served
	m.coord = nil
	m.mu.Unlock()
	if srv == nil {
		return
	}
	cancel()
	<-served
	if err := srv.Close(); err != nil {
		m.t.Errorf("close coordinator: %v", err)
	}
}

// StartCoordinator starts it again on the same address and data.
func (m *Mesh) StartCoordinator() {
	m.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger for a moment
		if ln, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		m.t.Fatalf("relisten on %s: %v", m.addr, err)
	}
	m.startCoordinator(ln)
}

// Token creates a join token.
func (m *Mesh) Token(req api.TokenCreateRequest) string {
	m.t.Helper()
	resp, err := m.Admin.CreateToken(context.Background(), req)
	if err != nil {
		m.t.Fatalf("create token: %v", err)
	}
	return resp.Token
}

// NodeDir is where a node's state lives.
func (m *Mesh) NodeDir(name string) string { return filepath.Join(m.dir, "nodes", name) }

// AddNode enrolls and starts a node named name.
func (m *Mesh) AddNode(name string, tags ...string) *node.Node {
	m.t.Helper()
	return m.AddNodeWithTunnel(name, nil, tags...)
}

// StartNode starts (or restarts) the node with state in NodeDir(name). The
// token is used only if the node never enrolled.
func (m *Mesh) StartNode(name, token string) (*node.Node, error) {
	return m.StartNodeAt(m.NodeDir(name), name, token)
}

// StartNodeAt starts a node named name with its state in dir.
func (m *Mesh) StartNodeAt(dir, name, token string) (*node.Node, error) {
	return m.startNode(dir, name, token, nil)
}

// AddNodeWithTunnel is AddNode with the node's data plane built by
// newTunnel (node.Config.NewTunnel; nil: the default), for tests that
// shape it: a bind that drops packets, a shorter keep-alive.
func (m *Mesh) AddNodeWithTunnel(name string, newTunnel func(tunnel.Config, *slog.Logger) (tunnel.Tunnel, error), tags ...string) *node.Node {
	m.t.Helper()
	tok := m.Token(api.TokenCreateRequest{Tags: tags, TTL: api.Duration(time.Hour)})
	n, err := m.startNode(m.NodeDir(name), name, tok, newTunnel)
	if err != nil {
		m.t.Fatalf("start node %s: %v", name, err)
	}
	return n
}

func (m *Mesh) startNode(dir, name, token string, newTunnel func(tunnel.Config, *slog.Logger) (tunnel.Tunnel, error)) (*node.Node, error) {
	n, err := node.Start(context.Background(), node.Config{
		StateDir:    dir,
		Coordinator: m.URL,
		Token:       token,
		Hostname:    name,
		SocketPath:  "-",
		Logger:      m.log.With("c", name),
		NewTunnel:   newTunnel,

		AuditFsyncEvery: m.opts.AuditFsyncEvery,
	})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.nodes[name] = n
	m.mu.Unlock()
	return n, nil
}

// Node returns a running node by name (nil if none).
func (m *Mesh) Node(name string) *node.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[name]
}

// StopNode closes a node, keeping its state directory.
func (m *Mesh) StopNode(name string) {
	m.mu.Lock()
	n := m.nodes[name]
	delete(m.nodes, name)
	m.mu.Unlock()
	if n != nil {
		n.Close()
		// WireGuard drops a second handshake initiation from one key within
		// 20 ms as a flood; a test restarts faster than any real node.
		time.Sleep(25 * time.Millisecond)
	}
}

// WaitPeers waits until node n holds exactly the named peers.
func (m *Mesh) WaitPeers(n *node.Node, names ...string) {
	m.t.Helper()
	want := fmt.Sprint(names)
	var got string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var have []string
		for _, p := range n.Netmap().SortedPeers() {
			have = append(have, p.Name)
		}
		if got = fmt.Sprint(have); got == want || (len(have) == 0 && len(names) == 0) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("node %s: peers %s, want %s", n.Name(), got, want)
}

// WaitCatalog waits until node n may call service svc (its catalog lists it).
func (m *Mesh) WaitCatalog(n *node.Node, svc string) {
	m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range n.Netmap().Catalog {
			if s.Name == svc {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.t.Fatalf("node %s never got %s in its catalog", n.Name(), svc)
}

// Close stops every node and the coordinator.
func (m *Mesh) Close() {
	m.mu.Lock()
	nodes := m.nodes
	m.nodes = map[string]*node.Node{}
	m.mu.Unlock()
	for _, n := range nodes {
		n.Close()
	}
	m.StopCoordinator()
	if m.Admin != nil {
		m.Admin.Close()
	}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}
