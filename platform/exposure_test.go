package platform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// newSDKServer is an MCP server from the official Go SDK, with no tools:
// the probe only needs it to answer initialize.
func newSDKServer(name, version string) *mcp.Server {
	return mcp.NewServer(&mcp.Implementation{Name: name, Version: version}, nil)
}

// streamableHandler serves s over Streamable HTTP.
func streamableHandler(s *mcp.Server, opts *mcp.StreamableHTTPOptions) http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts)
}

// serveExposureTest serves h on a new listener at addr ("127.0.0.1:0" for
// any port) and closes it, with every connection, when the test ends.
func serveExposureTest(t *testing.T, addr string, h http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { // ends when Close closes ln
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// serveRawTCP accepts connections on 127.0.0.1 and hands each to handle,
// which owns it; everything is closed when the test ends.
func serveRawTCP(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() { // ends when the cleanup closes ln
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// freeLoopbackPort returns 127.0.0.1 and a port nothing listens on.
func freeLoopbackPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

// requestLog records the method, path and session header of each request.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+r.Header.Get("Mcp-Session-Id")))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

// checkNoLeaks fails the test if goroutines of this package, the SDK or
// net/http started during it are still running (after a grace period) once
// its other cleanups have closed every server. Call it first, so that its
// cleanup runs last.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := goroutineIDs()
	t.Cleanup(func() {
		var leaked []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			leaked = leaked[:0]
			for id, g := range goroutineStacks() {
				if _, old := before[id]; !old && ownGoroutine(g) {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(leaked) > 0 {
			t.Errorf("%d goroutines leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

// goroutineStacks maps each goroutine's header ("goroutine 12") to its stack.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	gs := make(map[string]string)
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		gs[id] = g
	}
	return gs
}

// ownGoroutine is true for goroutines the probe or the test servers run,
// and false for the runtime's and the test framework's.
func ownGoroutine(stack string) bool {
	for _, s := range []string{"mcpmesh", "modelcontextprotocol", "net/http."} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// TestProbeMCPFindsStreamableHTTPServerAndClosesItsSession probes Go SDK
// servers in each response mode and proves the probe names the server,
// and that the session it opened is gone afterwards.
func TestProbeMCPFindsStreamableHTTPServerAndClosesItsSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *mcp.StreamableHTTPOptions
	}{
		{"event stream answer", nil},
		{"JSON answer", &mcp.StreamableHTTPOptions{JSONResponse: true}},
		{"stateless", &mcp.StreamableHTTPOptions{Stateless: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			var log requestLog
			mux := http.NewServeMux()
			mux.Handle("/mcp", log.wrap(streamableHandler(newSDKServer("notes", "0.3.1"), tc.opts)))
			addr := serveExposureTest(t, "127.0.0.1:0", mux)

			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			ans, err := ProbeMCP(ctx, addr, nil)
			if err != nil {
				t.Fatalf("ProbeMCP: %v", err)
			}
			want := MCPAnswer{
				Transport:       TransportStreamableHTTP,
				URL:             fmt.Sprintf("http://%s/mcp", addr),
				ServerName:      "notes",
				ServerVersion:   "0.3.1",
				ProtocolVersion: "2025-06-18",
			}
			if ans == nil || *ans != want {
				t.Fatalf("ProbeMCP = %+v, want %+v", ans, want)
			}

			reqs := log.get()
			if tc.opts != nil && tc.opts.Stateless {
				if len(reqs) != 1 || reqs[0] != "POST /mcp" {
					t.Errorf("requests = %q, want one POST /mcp", reqs)
				}
				return
			}
			if len(reqs) != 2 || reqs[0] != "POST /mcp" || !strings.HasPrefix(reqs[1], "DELETE /mcp ") {
				t.Fatalf("requests = %q, want POST /mcp then DELETE /mcp with the session", reqs)
			}
			// The session is closed: the server no longer knows it.
			sid := strings.TrimPrefix(reqs[1], "DELETE /mcp ")
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, want.URL,
				strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"ping"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Session-Id", sid)
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("request in the probe's session after the probe: %s, want 404 (session gone)", resp.Status)
			}
		})
	}
}

// TestProbeMCPFindsSSEServer proves a server of the old HTTP+SSE transport
// is found at /sse, named from the answer to the initialize POSTed to its
// endpoint, and that the probe does not keep its stream open.
func TestProbeMCPFindsSSEServer(t *testing.T) {
	checkNoLeaks(t)
	var log requestLog
	s := newSDKServer("legacy", "2.0.0")
	mux := http.NewServeMux()
	mux.Handle("/sse", log.wrap(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil)))
	addr := serveExposureTest(t, "127.0.0.1:0", mux)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ans, err := ProbeMCP(ctx, addr, nil)
	if err != nil {
		t.Fatalf("ProbeMCP: %v", err)
	}
	want := MCPAnswer{
		Transport:       TransportSSE,
		URL:             fmt.Sprintf("http://%s/sse", addr),
		ServerName:      "legacy",
		ServerVersion:   "2.0.0",
		ProtocolVersion: "2025-06-18",
	}
	if ans == nil || *ans != want {
		t.Fatalf("ProbeMCP = %+v, want %+v", ans, want)
	}
	if reqs := log.get(); !slices.Contains(reqs, "GET /sse") {
		t.Errorf("requests = %q, want a GET /sse", reqs)
	}
}

// TestProbeMCPTriesTheGivenPaths proves a server mounted elsewhere is
// missed by the default paths and found when its path is given.
func TestProbeMCPTriesTheGivenPaths(t *testing.T) {
	checkNoLeaks(t)
	mux := http.NewServeMux()
	mux.Handle("/tools/mcp", streamableHandler(newSDKServer("elsewhere", "1"), nil))
	addr := serveExposureTest(t, "127.0.0.1:0", mux)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	if ans, err := ProbeMCP(ctx, addr, nil); ans != nil || err != nil {
		t.Errorf("ProbeMCP with the default paths = %+v, %v; want nil, nil", ans, err)
	}
	ans, err := ProbeMCP(ctx, addr, []string{"/nothing", "/tools/mcp"})
	if err != nil || ans == nil || ans.ServerName != "elsewhere" || !strings.HasSuffix(ans.URL, "/tools/mcp") {
		t.Errorf("ProbeMCP with /tools/mcp = %+v, %v; want the server elsewhere at /tools/mcp", ans, err)
	}
	for _, bad := range []string{"mcp", "http://example.com/mcp", "//example.com/mcp"} {
		if _, err := ProbeMCP(ctx, addr, []string{bad}); err == nil {
			t.Errorf("ProbeMCP with path %q: no error", bad)
		}
	}
}

// TestProbeMCPIgnoresHTTPServersThatAreNotMCP proves web servers, JSON-RPC
// servers that are not MCP, and a redirect to an MCP server (the probe
// follows none) are not taken for MCP servers, and are done with quickly.
func TestProbeMCPIgnoresHTTPServersThatAreNotMCP(t *testing.T) {
	mcpServer := streamableHandler(newSDKServer("behind-redirect", "1"), nil)
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"not found", http.NotFound},
		{"web page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>hello</body></html>")
		}},
		{"JSON-RPC error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}`)
		}},
		{"result without serverInfo", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}`)
		}},
		{"event stream without endpoint", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: tick\ndata: 1\n\n")
		}},
		{"redirect to an MCP server", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/real" {
				mcpServer.ServeHTTP(w, r)
				return
			}
			http.Redirect(w, r, "/real", http.StatusTemporaryRedirect)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			addr := serveExposureTest(t, "127.0.0.1:0", tc.h)
			expectNoMCP(t, addr)
		})
	}
}

// expectNoMCP requires the probe to find no MCP server at addr, without
// an error, and to decide within 2 s.
func expectNoMCP(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	ans, err := ProbeMCP(ctx, addr, nil)
	if ans != nil || err != nil {
		t.Errorf("ProbeMCP = %+v, %v; want nil, nil", ans, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ProbeMCP took %v to decide", d)
	}
}

// TestProbeMCPIgnoresServersThatDoNotSpeakHTTP proves sockets that answer
// garbage or hang up are not MCP, and are not waited on.
func TestProbeMCPIgnoresServersThatDoNotSpeakHTTP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(net.Conn)
	}{
		{"hangs up at once", func(c net.Conn) { c.Close() }},
		{"writes garbage and hangs up", func(c net.Conn) {
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
			c.Close()
		}},
		{"writes garbage and stays", func(c net.Conn) {
			io.WriteString(c, "\x00\x01\x02 not http at all\r\n\r\n")
			io.Copy(io.Discard, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			// net/http logs through the log package; a server that speaks
			// first must not make every scan log a line.
			var logged bytes.Buffer
			logOut := log.Writer()
			log.SetOutput(&logged)
			t.Cleanup(func() { log.SetOutput(logOut) })
			addr := serveRawTCP(t, tc.handle)
			expectNoMCP(t, addr)
			if logged.Len() > 0 {
				t.Errorf("the probe logged: %s", logged.Bytes())
			}
		})
	}
}

// TestProbeMCPGivesUpOnASilentServerAtItsDeadline proves a socket that
// accepts and never answers costs no more than the probe's context allows,
// and is reported as unknown rather than as not MCP.
func TestProbeMCPGivesUpOnASilentServerAtItsDeadline(t *testing.T) {
	checkNoLeaks(t)
	addr := serveRawTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	ans, err := ProbeMCP(ctx, addr, nil)
	d := time.Since(start)
	if ans != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ProbeMCP = %+v, %v; want nil and a deadline error", ans, err)
	}
	if d > 1500*time.Millisecond {
		t.Errorf("ProbeMCP took %v with a 300ms deadline", d)
	}
}

// TestProbeMCPReportsAClosedPort proves a port nothing listens on is an
// error (the answer is unknown), not "not MCP".
func TestProbeMCPReportsAClosedPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ans, err := ProbeMCP(ctx, freeLoopbackPort(t), nil)
	if ans != nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("ProbeMCP = %+v, %v; want nil and connection refused", ans, err)
	}
}

// TestProbeMCPSendsNothingOffTheHost proves addresses that are not this
// host's are refused before any connection is tried.
func TestProbeMCPSendsNothingOffTheHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, addr := range []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:80"),
		netip.MustParseAddrPort("[2001:db8::1]:80"),
		netip.MustParseAddrPort("0.0.0.0:80"),
		netip.MustParseAddrPort("127.0.0.1:0"),
		{},
	} {
		start := time.Now()
		ans, err := ProbeMCP(ctx, addr, nil)
		if ans != nil || err == nil {
			t.Errorf("ProbeMCP(%s) = %+v, %v; want an error", addr, ans, err)
		}
		var ce *probeConnectError
		if errors.As(err, &ce) || time.Since(start) > time.Second {
			t.Errorf("ProbeMCP(%s) tried to connect: %v", addr, err)
		}
	}
}

// TestScanExposureReportsOnlyNonLoopbackMCPListeners runs the scan over a
// made-up listener list whose sockets really exist on 127.0.0.1, so no
// root or namespace is needed: listeners bound to every interface are
// probed on loopback (:: falling back to 127.0.0.1), loopback-bound ones
// are not reported even when they are MCP servers, silent ones cost one
// timeout, and the result is sorted by port.
func TestScanExposureReportsOnlyNonLoopbackMCPListeners(t *testing.T) {
	checkNoLeaks(t)
	mcpOn := func(name string) netip.AddrPort {
		mux := http.NewServeMux()
		mux.Handle("/mcp", streamableHandler(newSDKServer(name, "1"), nil))
		return serveExposureTest(t, "127.0.0.1:0", mux)
	}
	everywhere := func(a netip.AddrPort, unspecified netip.Addr) netip.AddrPort {
		return netip.AddrPortFrom(unspecified, a.Port())
	}
	v4, v6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
	wild4 := mcpOn("wild4")
	wild6 := mcpOn("wild6") // [::1] refuses (it listens on 127.0.0.1 only); 127.0.0.1 answers
	loop := mcpOn("loopback")
	mapped := mcpOn("mapped")
	plain := serveExposureTest(t, "127.0.0.1:0", http.NotFoundHandler())
	silent := serveRawTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	closed := freeLoopbackPort(t)
	listeners := []Listener{
		{Addr: everywhere(wild6, v6), Inode: 2, PID: 20, Process: "six"},
		{Addr: everywhere(wild4, v4), Inode: 1, PID: 10, Process: "four"},
		{Addr: loop, Inode: 3},
		{Addr: netip.AddrPortFrom(netip.MustParseAddr("::ffff:0.0.0.0"), mapped.Port()), Inode: 4},
		{Addr: netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), mapped.Port()), Inode: 5},
		{Addr: everywhere(plain, v4), Inode: 6},
		{Addr: everywhere(silent, v4), Inode: 7},
		{Addr: everywhere(closed, v6), Inode: 8},
		{Addr: netip.MustParseAddrPort("192.0.2.1:80"), Inode: 9}, // not this host's: never probed
	}

	start := time.Now()
	got, err := ScanExposure(t.Context(), ScanOptions{
		Timeout:   time.Second,
		Listeners: func() ([]Listener, error) { return listeners, nil },
	})
	if err != nil {
		t.Fatalf("ScanExposure: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ScanExposure took %v with a 1s probe timeout", d)
	}
	want := map[uint16]Exposure{
		wild4.Port():  {Listener: listeners[1], MCP: MCPAnswer{URL: fmt.Sprintf("http://%s/mcp", wild4), ServerName: "wild4"}},
		wild6.Port():  {Listener: listeners[0], MCP: MCPAnswer{URL: fmt.Sprintf("http://%s/mcp", wild6), ServerName: "wild6"}},
		mapped.Port(): {Listener: listeners[3], MCP: MCPAnswer{URL: fmt.Sprintf("http://%s/mcp", mapped), ServerName: "mapped"}},
	}
	if len(got) != len(want) {
		t.Errorf("ScanExposure found %d exposures, want %d: %+v", len(got), len(want), got)
	}
	for i, e := range got {
		if i > 0 && got[i-1].Listener.Addr.Port() > e.Listener.Addr.Port() {
			t.Errorf("exposures not sorted by port: %v before %v", got[i-1].Listener.Addr, e.Listener.Addr)
		}
		w, ok := want[e.Listener.Addr.Port()]
		if !ok || e.Listener != w.Listener || e.MCP.URL != w.MCP.URL || e.MCP.ServerName != w.MCP.ServerName ||
			e.MCP.Transport != TransportStreamableHTTP {
			t.Errorf("ScanExposure reported %+v; want %+v", e, w)
		}
	}
}

// TestScanExposureFailsWhenListenersCannotBeListed proves a scan that could
// not look is an error, not an empty (clean) result.
func TestScanExposureFailsWhenListenersCannotBeListed(t *testing.T) {
	boom := errors.New("no /proc")
	got, err := ScanExposure(t.Context(), ScanOptions{
		Listeners: func() ([]Listener, error) { return nil, boom },
	})
	if !errors.Is(err, boom) || got != nil {
		t.Errorf("ScanExposure = %v, %v; want the listing error", got, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got, err = ScanExposure(ctx, ScanOptions{
		Listeners: func() ([]Listener, error) {
			return []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:1")}}, nil
		},
	})
	if !errors.Is(err, context.Canceled) || got != nil {
		t.Errorf("ScanExposure with a cancelled context = %v, %v; want context.Canceled", got, err)
	}
}
