package mcp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const benchSessions = 64

// loadEnv makes the test binary a load process: the upstream MCP server
// and the SDK clients of the benchmark, in a process of their own.
const loadEnv = "MCPMESH_MCP_BENCH_LOAD"

func TestMain(m *testing.M) {
	if os.Getenv(loadEnv) == "1" {
		if err := runLoad(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "load process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runner runs calls tools/call echo calls spread over the first sessions
// sessions connected to endpoint and returns their latencies (sorted) and
// the wall time of the whole round.
type runner func(endpoint string, sessions, calls int) ([]time.Duration, time.Duration, error)

// BenchmarkToolsCall measures tools/call through the proxy against direct
// calls to the same upstream in the same run, with the upstream, the proxy
// and 64 concurrent SDK client sessions all in this process. It reports
// p50/p99 latency, the latency the proxy adds and the throughput ratio
// (proxy/direct). b.N is the number of calls each way; the serial (one
// session) figures use up to 2000 calls.
//
//	go test -run=NONE -bench=ToolsCall -benchtime=20000x ./mcp/
func BenchmarkToolsCall(b *testing.B) {
	r := newRig(b, &sdk.StreamableHTTPOptions{JSONResponse: true})
	ss := newSessionPool(httpFrom(b, "127.0.0.2"))
	b.Cleanup(ss.close)
	measure(b, r.up.url, r.endpoint(), ss.run)
}

// BenchmarkToolsCallSeparateProcesses is BenchmarkToolsCall deployed as in
// production: the proxy (this process, as in the node daemon) apart from
// the MCP clients and the upstream (a load process). In one process the
// SDK's garbage (about 1 MB per call, mostly its JSON decoder) sets the
// pace of a garbage collector that must also scan the proxy's goroutines,
// which charges the proxy for the SDK's allocations.
func BenchmarkToolsCallSeparateProcesses(b *testing.B) {
	lp := startLoad(b)
	r := newRigTo(b, lp.upstream)
	measure(b, lp.upstream, r.endpoint(), lp.run)
}

// measure runs the serial and loaded comparisons and reports them.
func measure(b *testing.B, direct, proxied string, run runner) {
	must := func(l []time.Duration, e time.Duration, err error) ([]time.Duration, time.Duration) {
		if err != nil {
			b.Fatal(err)
		}
		return l, e
	}
	pct := func(l []time.Duration, p float64) float64 {
		return float64(l[int(p*float64(len(l)-1))].Microseconds())
	}
	must(run(direct, 4, 400)) // warm up connections and code paths
	must(run(proxied, 4, 400))
	b.ResetTimer()
	// Unloaded: one session, calls one after another.
	serial := min(b.N, 2000)
	d1, _ := must(run(direct, 1, serial))
	p1, _ := must(run(proxied, 1, serial))
	// Loaded: 64 sessions at once, in alternating rounds so that drift on
	// a shared machine (other load, GC state) falls on both sides alike.
	const rounds = 4
	var dl, pl []time.Duration
	var de, pe, dc, pc time.Duration
	for range rounds {
		c0 := cpuTime(b)
		l, e := must(run(direct, benchSessions, b.N/rounds))
		c1 := cpuTime(b)
		dl, de, dc = append(dl, l...), de+e, dc+c1-c0
		l, e = must(run(proxied, benchSessions, b.N/rounds))
		pl, pe, pc = append(pl, l...), pe+e, pc+cpuTime(b)-c1
	}
	slices.Sort(dl)
	slices.Sort(pl)
	b.StopTimer()
	b.ReportMetric(pct(p1, .50)-pct(d1, .50), "serial-added-p50-µs")
	b.ReportMetric(pct(p1, .99)-pct(d1, .99), "serial-added-p99-µs")
	b.ReportMetric(pct(d1, .50), "serial-direct-p50-µs")
	dRate := float64(len(dl)) / de.Seconds()
	pRate := float64(len(pl)) / pe.Seconds()
	b.ReportMetric(pct(dl, .50), "direct-p50-µs")
	b.ReportMetric(pct(dl, .99), "direct-p99-µs")
	b.ReportMetric(pct(pl, .50), "proxy-p50-µs")
	b.ReportMetric(pct(pl, .99), "proxy-p99-µs")
	b.ReportMetric(pct(pl, .50)-pct(dl, .50), "added-p50-µs")
	b.ReportMetric(pct(pl, .99)-pct(dl, .99), "added-p99-µs")
	b.ReportMetric(dRate, "direct-calls/s")
	b.ReportMetric(pRate, "proxy-calls/s")
	b.ReportMetric(pRate/dRate, "throughput-ratio")
	b.ReportMetric(float64(dc.Microseconds())/float64(len(dl)), "direct-cpu-µs/call")
	b.ReportMetric(float64(pc.Microseconds())/float64(len(pl)), "proxy-cpu-µs/call")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here
}

// cpuTime is the CPU time (user and system) this process has used, so
// far: on two shared cores the throughput ratio follows the CPU a call
// costs, and this shows where a ratio comes from.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// loadRequest and loadResult are the load process's protocol: one JSON
// line each way per round.
type loadRequest struct {
	Endpoint string
	Sessions int
	Calls    int
}

type loadResult struct {
	Upstream string          `json:",omitempty"` // the first line: where the upstream listens
	Lat      []time.Duration `json:",omitempty"`
	Elapsed  time.Duration   `json:",omitempty"`
	Err      string          `json:",omitempty"`
}

// runLoad serves the upstream MCP server and runs rounds of calls as the
// driving benchmark asks, until stdin closes.
func runLoad(in io.Reader, out io.Writer) error {
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
	// The clients come from 127.0.0.2, the address the proxy knows as alice.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 128,
	}
	defer tr.CloseIdleConnections()
	pool := newSessionPool(&http.Client{Transport: tr})
	defer pool.close()
	enc := json.NewEncoder(out)
	if err := enc.Encode(loadResult{Upstream: "http://" + ln.Addr().String() + "/mcp"}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req loadRequest
		var res loadResult
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

// loadProcess is the benchmark's handle on a load process.
type loadProcess struct {
	upstream string
	in       io.Writer
	out      *json.Decoder
}

// startLoad starts this test binary as a load process; it exits when the
// benchmark ends and closes its stdin.
func startLoad(b *testing.B) *loadProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), loadEnv+"=1")
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
	lp := &loadProcess{in: in, out: json.NewDecoder(outp)}
	var first loadResult
	if err := lp.out.Decode(&first); err != nil || first.Upstream == "" {
		b.Fatalf("load process did not start: %v %+v", err, first)
	}
	lp.upstream = first.Upstream
	return lp
}

// run implements runner in the load process.
func (lp *loadProcess) run(endpoint string, sessions, calls int) ([]time.Duration, time.Duration, error) {
	line, err := json.Marshal(loadRequest{Endpoint: endpoint, Sessions: sessions, Calls: calls})
	if err != nil {
		return nil, 0, err
	}
	if _, err := lp.in.Write(append(line, '\n')); err != nil {
		return nil, 0, fmt.Errorf("load process: %w", err)
	}
	var res loadResult
	if err := lp.out.Decode(&res); err != nil {
		return nil, 0, fmt.Errorf("load process: %w", err)
	}
	if res.Err != "" {
		return nil, 0, fmt.Errorf("load process: %s", res.Err)
	}
	return res.Lat, res.Elapsed, nil
}
