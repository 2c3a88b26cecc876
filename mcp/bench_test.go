package mcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const benchSessions = 64

// roleEnv makes the test binary one of the benchmark's other processes:
// "upstream" serves the MCP server, "clients" runs the SDK client sessions.
const roleEnv = "MCPMESH_MCP_BENCH_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "upstream":
		if err := runUpstream(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "upstream process:", err)
			os.Exit(1)
		}
	case "clients":
		if err := runClients(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "clients process:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown", roleEnv)
		os.Exit(2)
	}
	os.Exit(0)
}

// runner runs calls tools/call echo calls spread over the first sessions
// sessions connected to endpoint and returns their latencies (sorted) and
// the wall time of the whole round.
type runner func(endpoint string, sessions, calls int) ([]time.Duration, time.Duration, error)

// cpuClock returns the CPU time used so far by every process of a
// benchmark: on two shared cores the throughput ratio follows the CPU a
// call costs, and this shows where a ratio comes from.
type cpuClock func() time.Duration

// BenchmarkToolsCall measures tools/call through the proxy against direct
// calls to the same upstream in the same run, with the upstream, the proxy
// and 64 concurrent SDK client sessions all in this process. A bare TCP
// relay is measured alongside: the floor of any extra hop. It reports
// p50/p99 latency, the latency the proxy adds and the throughput ratio
// (proxy/direct). b.N is the number of calls each way; the serial (one
// session) figures use up to 2000 calls.
//
//	go test -run=NONE -bench=ToolsCall -benchtime=20000x ./mcp/
func BenchmarkToolsCall(b *testing.B) {
	r := newRig(b, &sdk.StreamableHTTPOptions{JSONResponse: true})
	r.sink = auditLog(b)
	ss := newSessionPool(httpFrom(b, "127.0.0.2"))
	b.Cleanup(ss.close)
	measure(b, r.up.url, r.endpoint(), []other{{"relay", relayTo(b, r.up.url)}}, ss.run, func() time.Duration { return processCPU(b, os.Getpid()) })
}

// BenchmarkToolsCallSeparateProcesses is BenchmarkToolsCall deployed as in
// production: the MCP clients, the proxy (this process, as in the node
// daemon) and the upstream MCP server each in a process of its own, so
// that direct calls cross a process boundary as they do in real use (a
// client never lives in its server's process) and each process has its
// own garbage collector. The CPU per call is that of all three processes.
// A bare TCP relay in the proxy's process is measured alongside: what any
// extra process hop costs here before the proxy does any work.
func BenchmarkToolsCallSeparateProcesses(b *testing.B) {
	sp := startSeparateProcesses(b)
	sp.measure(b, other{"relay", relayTo(b, sp.upstream)})
}

// separateProcesses is the three-process layout: an upstream process, a
// clients process, and the proxy (with the node's audit log) in this one.
type separateProcesses struct {
	upstream string // the upstream's endpoint
	up, cl   *roleProcess
	rig      *rig
}

func startSeparateProcesses(b *testing.B) *separateProcesses {
	up := startRole(b, "upstream")
	var first roleResult
	if err := up.out.Decode(&first); err != nil || first.Upstream == "" {
		b.Fatalf("upstream process did not start: %v %+v", err, first)
	}
	cl := startRole(b, "clients")
	r := newRigTo(b, first.Upstream)
	r.sink = auditLog(b)
	return &separateProcesses{upstream: first.Upstream, up: up, cl: cl, rig: r}
}

// measure runs measure with the clients process, counting the CPU of all
// three processes.
func (sp *separateProcesses) measure(b *testing.B, others ...other) {
	measure(b, sp.upstream, sp.rig.endpoint(), others, sp.cl.run, func() time.Duration {
		return processCPU(b, os.Getpid()) + processCPU(b, sp.up.pid) + processCPU(b, sp.cl.pid)
	})
}

// BenchmarkProxyLayers is BenchmarkToolsCallSeparateProcesses with, in
// the same rounds, a path for each layer of what the proxy adds, from the
// least work to the most:
//   - relay: a bare TCP relay (startRelay), the hop and nothing else;
//   - nethop: an HTTP hop built from net/http's parser and writers on one
//     goroutine per connection (netHopTo), HTTP framing and nothing else;
//   - httphop: the proxy's own front and upstream transport with no MCP
//     work (httpHopTo): what front.go and upstream.go add to that;
//   - netmux: the whole proxy behind net/http's Server instead of front,
//     the measure of why the proxy has an HTTP/1.1 front of its own;
//
// and the proxy itself, whose difference from httphop is its MCP work.
//
//	go test -run=NONE -bench=ProxyLayers -benchtime=20000x ./mcp/
func BenchmarkProxyLayers(b *testing.B) {
	sp := startSeparateProcesses(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: sp.rig.proxy.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: requestReadTimeout,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go pprof.Do(context.Background(), pprof.Labels("role", "netmux"), func(context.Context) { srv.Serve(ln) })
	b.Cleanup(func() { srv.Close() })
	sp.measure(b, other{"relay", relayTo(b, sp.upstream)}, other{"nethop", netHopTo(b, sp.upstream)},
		other{"httphop", httpHopTo(b, sp.upstream)}, other{"netmux", "http://" + ln.Addr().String() + "/svc/charts/mcp"})
}

// netHopTo is the MCP endpoint at upstream reached through the least an
// HTTP hop can be with net/http's own parser and writers: one goroutine per
// connection, with one upstream connection of its own, reads a request
// (http.ReadRequest), writes it upstream (Request.Write), reads the answer
// (http.ReadResponse) and writes it back (Response.Write). No timeouts,
// limits, cancellation or streaming: not a server to deploy, the floor of
// HTTP framing in Go.
func netHopTo(b *testing.B, upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	hop := func(c net.Conn) {
		defer c.Close()
		up, err := net.Dial("tcp", u.Host)
		if err != nil {
			return
		}
		defer up.Close()
		cr, cw := bufio.NewReader(c), bufio.NewWriter(c)
		ur, uw := bufio.NewReader(up), bufio.NewWriter(up)
		for {
			req, err := http.ReadRequest(cr)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			out := &http.Request{Method: req.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: make(http.Header, 8), Host: u.Host, ContentLength: int64(len(body)), Body: io.NopCloser(bytes.NewReader(body))}
			copyHeaders(out.Header, req.Header, "Content-Type", "Accept", hdrSession, hdrVersion, "Last-Event-Id")
			if out.Write(uw) != nil || uw.Flush() != nil {
				return
			}
			resp, err := http.ReadResponse(ur, out)
			if err != nil {
				return
			}
			// An event stream is relayed whole when it ends; the clients'
			// standalone stream never does, and no call waits on it.
			answer, err := io.ReadAll(resp.Body)
			if err != nil {
				return
			}
			resp.Body = io.NopCloser(bytes.NewReader(answer))
			if resp.Write(cw) != nil || cw.Flush() != nil {
				return
			}
		}
	}
	go pprof.Do(context.Background(), pprof.Labels("role", "nethop"), func(context.Context) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go hop(c)
		}
	})
	return "http://" + ln.Addr().String() + u.Path
}

// httpHopTo is the MCP endpoint at upstream reached through an HTTP hop in
// this process that does none of the proxy's MCP work: the proxy's own
// front and upstream transport, forwarding each request with its MCP
// headers and relaying the answer unread. Between the bare relay and the
// proxy, it splits what the proxy adds into the HTTP hop and the MCP work
// (strict parse, decision, audit, re-encoding, filtering).
func httpHopTo(b *testing.B, upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		b.Fatal(err)
	}
	rt := newUpstreamTransport()
	b.Cleanup(rt.Close)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := &http.Request{Method: r.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: make(http.Header, 8), Host: u.Host, ContentLength: int64(len(body))}
		if len(body) > 0 {
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		copyHeaders(req.Header, r.Header, "Content-Type", "Accept", hdrSession, hdrVersion, "Last-Event-Id")
		resp, err := rt.RoundTrip(req.WithContext(r.Context()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			if !hopHeaders[k] {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(resp.StatusCode)
		if resp.ContentLength >= 0 {
			body, err := readAllSized(resp.Body, resp.ContentLength, maxUpstreamBody)
			if err == nil {
				w.Write(body)
			}
			return
		}
		// Flushed as it comes: an answer may be an event stream.
		rc := http.NewResponseController(w)
		buf := make([]byte, 4<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f := newFront(h, slog.New(slog.DiscardHandler), requestReadTimeout)
	go pprof.Do(context.Background(), pprof.Labels("role", "httphop"), func(context.Context) { f.serve(ln) })
	b.Cleanup(func() { f.close() })
	return "http://" + ln.Addr().String() + u.Path
}

// other is a third path measure runs alongside direct and proxied calls,
// and the name its figures carry.
type other struct{ name, endpoint string }

// auditLog is the serving node's own audit log (node/auditlog) in a
// temporary directory, hooked up as the node daemon hooks it with its
// default `up --audit-fsync` (auditlog.DefaultSyncEvery): each event
// written to the file before the call is forwarded, fsynced with the
// others of its span.
func auditLog(b *testing.B) func([]api.AuditEvent) (func() error, error) {
	l, err := auditlog.Open(b.TempDir(), nil, auditlog.DefaultSyncEvery)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return func(evs []api.AuditEvent) (func() error, error) {
		_, err := l.Append(evs...)
		return nil, err
	}
}

// measure runs the serial and loaded comparisons of the proxy against
// direct calls and reports them, and calls on other paths alongside (such
// as a bare TCP relay to the upstream: the floor that any extra hop costs).
func measure(b *testing.B, direct, proxied string, others []other, run runner, cpu cpuClock) {
	must := func(l []time.Duration, e time.Duration, err error) ([]time.Duration, time.Duration) {
		if err != nil {
			b.Fatal(err)
		}
		return l, e
	}
	pct := func(l []time.Duration, p float64) float64 {
		return float64(l[int(p*float64(len(l)-1))].Microseconds())
	}
	paths := []string{direct, proxied}
	for _, o := range others {
		paths = append(paths, o.endpoint)
	}
	for _, ep := range paths {
		must(run(ep, 4, 400)) // warm up connections and code paths
	}
	b.ResetTimer()
	// Rounds whose order rotates, so that drift on a shared machine (other
	// load, GC state, a vCPU the host parked) falls on every path alike.
	const rounds = 10
	// Unloaded: one session, calls one after another.
	serial := max(min(b.N, 2000)/rounds, 1)
	one := make([][]time.Duration, len(paths))
	for r := range rounds {
		for k := range paths {
			i := (r + k) % len(paths)
			l, _ := must(run(paths[i], 1, serial))
			one[i] = append(one[i], l...)
		}
	}
	for i := range one {
		slices.Sort(one[i])
	}
	// Loaded: 64 sessions at once.
	lat := make([][]time.Duration, len(paths))
	wall := make([]time.Duration, len(paths))
	used := make([]time.Duration, len(paths))
	for r := range rounds {
		for k := range paths {
			i := (r + k) % len(paths)
			c0 := cpu()
			l, e := must(run(paths[i], benchSessions, b.N/rounds))
			used[i] += cpu() - c0
			lat[i], wall[i] = append(lat[i], l...), wall[i]+e
		}
	}
	for i := range lat {
		slices.Sort(lat[i])
	}
	b.StopTimer()
	rate := func(i int) float64 { return float64(len(lat[i])) / wall[i].Seconds() }
	perCall := func(i int) float64 { return float64(used[i].Microseconds()) / float64(len(lat[i])) }
	d1, p1, dl, pl := one[0], one[1], lat[0], lat[1]
	b.ReportMetric(pct(p1, .50)-pct(d1, .50), "serial-added-p50-µs")
	b.ReportMetric(pct(p1, .99)-pct(d1, .99), "serial-added-p99-µs")
	b.ReportMetric(pct(d1, .50), "serial-direct-p50-µs")
	b.ReportMetric(pct(dl, .50), "direct-p50-µs")
	b.ReportMetric(pct(dl, .99), "direct-p99-µs")
	b.ReportMetric(pct(pl, .50), "proxy-p50-µs")
	b.ReportMetric(pct(pl, .99), "proxy-p99-µs")
	b.ReportMetric(pct(pl, .50)-pct(dl, .50), "added-p50-µs")
	b.ReportMetric(pct(pl, .99)-pct(dl, .99), "added-p99-µs")
	b.ReportMetric(rate(0), "direct-calls/s")
	b.ReportMetric(rate(1), "proxy-calls/s")
	b.ReportMetric(rate(1)/rate(0), "throughput-ratio")
	b.ReportMetric(perCall(0), "direct-cpu-µs/call")
	b.ReportMetric(perCall(1), "proxy-cpu-µs/call")
	for k, o := range others {
		i := 2 + k
		b.ReportMetric(pct(one[i], .50)-pct(d1, .50), "serial-"+o.name+"-added-p50-µs")
		b.ReportMetric(rate(i), o.name+"-calls/s")
		b.ReportMetric(rate(i)/rate(0), o.name+"-ratio")
		b.ReportMetric(perCall(i), o.name+"-cpu-µs/call")
	}
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here
}

// relayTo is the MCP endpoint at upstream reached through a bare TCP
// relay (startRelay) in this process.
func relayTo(b *testing.B, upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		b.Fatal(err)
	}
	return "http://" + startRelay(b, u.Host) + u.Path
}

// startRelay relays TCP connections to addr (host:port) byte for byte: the
// cheapest hop there is, with no HTTP or MCP work (on Linux, io.Copy
// between TCP sockets splices in the kernel).
func startRelay(b *testing.B, addr string) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go pprof.Do(context.Background(), pprof.Labels("role", "relay"), func(context.Context) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	})
	return ln.Addr().String()
}

// processCPU is the CPU time (user and system) a process has used so far,
// from /proc (whose clock ticks are 10 ms: a round of the loaded benchmark
// takes seconds).
func processCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 14th and 15th of the line.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: too short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick
}

// sessionPool keeps up to benchSessions SDK client sessions per endpoint.
type sessionPool struct {
	hc *http.Client
	mu sync.Mutex
	by map[string][]*sdk.ClientSession
}

func newSessionPool(hc *http.Client) *sessionPool {
	return &sessionPool{hc: hc, by: map[string][]*sdk.ClientSession{}}
}

func (p *sessionPool) sessions(endpoint string, n int) ([]*sdk.ClientSession, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.by[endpoint]) < n {
		c := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "1"}, nil)
		cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: endpoint, HTTPClient: p.hc, DisableStandaloneSSE: true}, nil)
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", endpoint, err)
		}
		p.by[endpoint] = append(p.by[endpoint], cs)
	}
	return p.by[endpoint][:n], nil
}

func (p *sessionPool) close() {
	for _, ss := range p.by {
		for _, cs := range ss {
			cs.Close()
		}
	}
}

// run implements runner with this process's sessions.
func (p *sessionPool) run(endpoint string, sessions, calls int) ([]time.Duration, time.Duration, error) {
	ss, err := p.sessions(endpoint, sessions)
	if err != nil {
		return nil, 0, err
	}
	params := &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}
	per := max(calls/len(ss), 1)
	lat := make([]time.Duration, per*len(ss))
	errs := make(chan error, len(ss))
	var wg sync.WaitGroup
	start := time.Now()
	for i, cs := range ss {
		wg.Go(func() {
			for j := range per {
				t0 := time.Now()
				if _, err := cs.CallTool(context.Background(), params); err != nil {
					errs <- fmt.Errorf("call: %w", err)
					return
				}
				lat[i*per+j] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return nil, 0, err
	default:
	}
	slices.Sort(lat)
	return lat, elapsed, nil
}

// roleRequest and roleResult are the protocol of the benchmark's other
// processes: one JSON line each way per round.
type roleRequest struct {
	Endpoint string
	Sessions int
	Calls    int
}

type roleResult struct {
	Upstream string          `json:",omitempty"` // the upstream's first line: where it listens
	Lat      []time.Duration `json:",omitempty"`
	Elapsed  time.Duration   `json:",omitempty"`
	Err      string          `json:",omitempty"`
}

// runUpstream serves the upstream MCP server until stdin closes.
func runUpstream(in io.Reader, out io.Writer) error {
	s := sdk.NewServer(&sdk.Implementation{Name: "charts", Version: "1"}, nil)
	sdk.AddTool(s, &sdk.Tool{Name: "echo"}, func(_ context.Context, _ *sdk.CallToolRequest, in echoIn) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "echo:" + in.Text}}}, nil, nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, &sdk.StreamableHTTPOptions{JSONResponse: true})}
	go hs.Serve(ln)
	defer hs.Close()
	if err := json.NewEncoder(out).Encode(roleResult{Upstream: "http://" + ln.Addr().String() + "/mcp"}); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, in)
	return err
}

// runClients runs rounds of calls as the driving benchmark asks, until
// stdin closes.
func runClients(in io.Reader, out io.Writer) error {
	// The clients come from 127.0.0.2, the address the proxy knows as alice.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 128,
	}
	defer tr.CloseIdleConnections()
	pool := newSessionPool(&http.Client{Transport: tr})
	defer pool.close()
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req roleRequest
		var res roleResult
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			res.Err = err.Error()
		} else if res.Lat, res.Elapsed, err = pool.run(req.Endpoint, req.Sessions, req.Calls); err != nil {
			res.Err = err.Error()
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return sc.Err()
}

// roleProcess is the benchmark's handle on one of its other processes.
type roleProcess struct {
	pid int
	in  io.Writer
	out *json.Decoder
}

// startRole starts this test binary as one of the benchmark's other
// processes; it exits when the benchmark ends and closes its stdin.
func startRole(b *testing.B, role string) *roleProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &roleProcess{pid: cmd.Process.Pid, in: in, out: json.NewDecoder(outp)}
}

// run implements runner in a clients process.
func (rp *roleProcess) run(endpoint string, sessions, calls int) ([]time.Duration, time.Duration, error) {
	line, err := json.Marshal(roleRequest{Endpoint: endpoint, Sessions: sessions, Calls: calls})
	if err != nil {
		return nil, 0, err
	}
	if _, err := rp.in.Write(append(line, '\n')); err != nil {
		return nil, 0, fmt.Errorf("clients process: %w", err)
	}
	var res roleResult
	if err := rp.out.Decode(&res); err != nil {
		return nil, 0, fmt.Errorf("clients process: %w", err)
	}
	if res.Err != "" {
		return nil, 0, fmt.Errorf("clients process: %s", res.Err)
	}
	return res.Lat, res.Elapsed, nil
}

// cannedUpstream answers every request at once with a fixed MCP answer,
// without a connection: what BenchmarkHandlerAlone leaves out.
type cannedUpstream struct{}

func (cannedUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	body := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"echo:hello"}]}}`
	h := http.Header{"Content-Type": {"application/json"}}
	if bytes.Contains(b, []byte(`"initialize"`)) {
		body = `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"charts","version":"1"}}}`
		h.Set(hdrSession, "session-1")
	}
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}, nil
}

// BenchmarkHandlerAlone is the proxy's own work per tools/call, without
// any connection: strict parse, decision, argument digest, re-encoding and
// an in-memory audit record, in front of an upstream answer made at once
// (so the figure leaves out every system call and the HTTP framing the
// other benchmarks include). It also counts what building the test
// request and recorder costs, a few µs.
//
//	go test ./mcp -run '^$' -bench HandlerAlone -benchtime 20000x
func BenchmarkHandlerAlone(b *testing.B) {
	pol := mustPolicy(b, testPolicy)
	p := New(Config{
		Node:     "server-1",
		WhoIs:    testWhoIs,
		Policy:   func() (*policy.Policy, uint64) { return pol, 1 },
		Audit:    func([]api.AuditEvent) (func() error, error) { return nil, nil },
		Upstream: cannedUpstream{},
	})
	if err := p.SetService(Service{Name: "charts", Tags: []string{"tag:phi"}, URL: "http://127.0.0.1:1/mcp"}); err != nil {
		b.Fatal(err)
	}
	h := p.Handler()
	post := func(body, sid string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7811/svc/charts/mcp", strings.NewReader(body))
		req.RemoteAddr = "127.0.0.2:5555" // alice
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sid != "" {
			req.Header.Set(hdrSession, sid)
			req.Header.Set(hdrVersion, "2025-06-18")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	sid := post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`, "").Header().Get(hdrSession)
	if sid == "" {
		b.Fatal("initialize through the proxy gave no session")
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}`
	if rec := post(call, sid); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "echo:hello") {
		b.Fatalf("call: %d %s", rec.Code, rec.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		post(call, sid)
	}
}
