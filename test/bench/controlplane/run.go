package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// Phases, in the order they run; CPU is reported per phase.
const (
	phaseEnroll    = "enroll"
	phaseFirstMaps = "first maps"
	phaseIdle      = "idle"
	phasePolicy    = "policy"
	phaseJoin      = "join"
	phaseHubJoin   = "hub join"
)

// defaultIdle is how long the idle phase watches a mesh where nothing
// changes (heartbeats only).
const defaultIdle = 3 * time.Second

// defaultRepeat is how many policy changes and joins a run measures; one
// sample on a shared machine says little.
const defaultRepeat = 5

// config is one driver run at one mesh size.
type config struct {
	// mcpmesh is the binary under test; empty runs the coordinator inside
	// this process (profiling mode: the figures are then of this process).
	mcpmesh string
	// clientCmd returns the command of one client process.
	clientCmd func(args []string) *exec.Cmd
	nodes     int
	clients   int
	conc      int
	// timeout bounds every phase.
	timeout time.Duration
	// idle is the length of the idle phase (default 3 s).
	idle time.Duration
	// repeat is how many policy changes and joins to measure (default 5).
	repeat int
	// workDir holds the data directory and the logs.
	workDir string
	// profileDir receives a CPU profile per phase and a heap profile with
	// every stream open (in-process mode only).
	profileDir string
	log        io.Writer
}

// result is one run at one mesh size. Times are seconds, sizes bytes.
type result struct {
	Nodes       int    `json:"nodes"`
	Clients     int    `json:"clients"`
	Concurrency int    `json:"concurrency"`
	Coordinator string `json:"coordinator"`

	// RTT is the median of a trivial admin request (GET the policy) on an
	// established mTLS connection, just before the policy change.
	RTT float64 `json:"rttSeconds"`

	EnrollAll float64 `json:"enrollAllSeconds"`
	FirstMaps float64 `json:"firstMapsSeconds"`
	// Repeat is how many policy changes and how many joins were measured;
	// times below are their median (and worst), bytes and CPU per change.
	Repeat int `json:"repeat"`
	// PolicyApply is the admin's apply call alone; PolicyReach runs from
	// its start until every node (the hub too) holds the new version.
	PolicyApply        float64 `json:"policyApplySeconds"`
	PolicyReach        float64 `json:"policyReachSeconds"`
	PolicyReachMax     float64 `json:"policyReachMaxSeconds"`
	PolicyBytesPerNode float64 `json:"policyBytesPerNode"`
	PolicyBytesMin     uint64  `json:"policyBytesMin"`
	PolicyBytesMax     uint64  `json:"policyBytesMax"`
	PolicyBytesHub     float64 `json:"policyBytesHub"`
	// JoinReach runs from a new light node's enrollment request until its
	// one peer, the hub, holds it; JoinEnroll is the enrollment call alone.
	JoinEnroll   float64 `json:"joinEnrollSeconds"`
	JoinReach    float64 `json:"joinReachSeconds"`
	JoinReachMax float64 `json:"joinReachMaxSeconds"`
	// JoinBytesHub is what one join cost its peer (the median);
	// JoinBytesOthers what it cost each of the N nodes that do not see it,
	// on average, and JoinMsgsOthers the messages they got for all joins.
	JoinBytesHub    uint64  `json:"joinBytesHub"`
	JoinBytesOthers float64 `json:"joinBytesOthers"`
	JoinMsgsOthers  uint64  `json:"joinMessagesOthers"`
	// HubJoinReach runs from a second hub's enrollment request until every
	// node holds it (it publishes a service every node may call).
	HubJoinReach        float64 `json:"hubJoinReachSeconds"`
	HubJoinBytesPerNode float64 `json:"hubJoinBytesPerNode"`

	// Idle is the length of the idle phase: every stream open, no change.
	Idle float64 `json:"idleSeconds"`
	// CPU is the coordinator's CPU seconds per phase; ClientCPU that of
	// every client process together, for context (they share the cores).
	CPU       map[string]float64 `json:"coordinatorCPUSeconds"`
	ClientCPU map[string]float64 `json:"clientCPUSeconds"`
	// RSSStreams is the coordinator's resident memory with every stream
	// open; PeakRSS its VmHWM at the end.
	RSSStreams uint64 `json:"rssStreamsBytes"`
	PeakRSS    uint64 `json:"peakRSSBytes"`
}

// cmdRun is the driver.
func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	bin := fs.String("mcpmesh", "", "the mcpmesh binary (go build -o PATH ./cmd/mcpmesh); required unless -profile")
	sizes := fs.String("nodes", "100,1000,10000", "mesh sizes, comma-separated")
	clients := fs.Int("clients", 0, "client processes (0: one per 2,000 nodes, at least 2)")
	conc := fs.Int("concurrency", 16, "enrollments in flight per client process")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on every phase")
	repeat := fs.Int("repeat", defaultRepeat, "policy changes and joins measured per size")
	jsonOut := fs.String("json", "", "also append one JSON result per size to this file")
	work := fs.String("workdir", "", "keep data and logs here (default: a temporary directory, removed)")
	profile := fs.String("profile", "", "run the coordinator in this process and write CPU profiles per phase and a heap profile here")
	command := fs.String("command", "", "the command line to print in the report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" && *profile == "" {
		return errors.New("-mcpmesh is required (or -profile for an in-process coordinator)")
	}
	if *profile != "" {
		*bin = ""
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("profile dir: %w", err)
		}
	}
	var ns []int
	for s := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-nodes: %q is not a positive count", s)
		}
		ns = append(ns, n)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	root := *work
	if root == "" {
		if root, err = os.MkdirTemp("", "bench-controlplane-"); err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
		defer os.RemoveAll(root)
	}
	var results []*result
	for _, n := range ns {
		cfg := config{
			mcpmesh:    *bin,
			clientCmd:  func(a []string) *exec.Cmd { return exec.Command(self, append([]string{"client"}, a...)...) },
			nodes:      n,
			clients:    *clients,
			conc:       *conc,
			timeout:    *timeout,
			repeat:     *repeat,
			workDir:    filepath.Join(root, fmt.Sprintf("n%d", n)),
			profileDir: *profile,
			log:        os.Stderr,
		}
		r, err := runOne(cfg)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		results = append(results, r)
		if *jsonOut != "" {
			if err := appendJSON(*jsonOut, r); err != nil {
				return err
			}
		}
	}
	cmdLine := *command
	if cmdLine == "" {
		cmdLine = "controlplane run " + strings.Join(args, " ")
	}
	writeReport(os.Stdout, results, cmdLine)
	return nil
}

func appendJSON(path string, r *result) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("json results: %w", err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(r); err != nil {
		return fmt.Errorf("json results: %w", err)
	}
	return nil
}

// driver holds one run's coordinator, hub and client processes.
type driver struct {
	cfg     config
	res     *result
	url     string
	pid     int
	admin   *adminclient.Client
	token   string
	hub     *meshtest.LightNode
	clients []*clientProc

	ctx    context.Context
	cancel context.CancelFunc
	runs   sync.WaitGroup // streams of the driver's own nodes
}

func (d *driver) logf(format string, args ...any) {
	fmt.Fprintf(d.cfg.log, "controlplane: %d nodes: "+format+"\n", append([]any{d.cfg.nodes}, args...)...)
}

// runOne measures one mesh size with a fresh coordinator.
func runOne(cfg config) (*result, error) {
	if cfg.clients <= 0 {
		cfg.clients = max(2, (cfg.nodes+1999)/2000)
	}
	cfg.clients = min(cfg.clients, cfg.nodes)
	if cfg.conc <= 0 {
		cfg.conc = 16
	}
	if cfg.timeout <= 0 {
		cfg.timeout = 5 * time.Minute
	}
	if cfg.idle <= 0 {
		cfg.idle = defaultIdle
	}
	if cfg.repeat <= 0 {
		cfg.repeat = defaultRepeat
	}
	if err := os.MkdirAll(cfg.workDir, 0o700); err != nil {
		return nil, fmt.Errorf("workdir: %w", err)
	}
	d := &driver{cfg: cfg, res: &result{
		Nodes: cfg.nodes, Clients: cfg.clients, Concurrency: cfg.conc, Idle: cfg.idle.Seconds(), Repeat: cfg.repeat,
		CPU: map[string]float64{}, ClientCPU: map[string]float64{},
	}}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	defer d.cancel()
	stop, err := d.startCoordinator()
	if err != nil {
		return nil, err
	}
	defer stop()
	// The nodes stop before the coordinator, so none is left reconnecting.
	defer func() {
		for _, c := range d.clients {
			c.stop()
		}
		d.cancel()
		d.runs.Wait()
		if d.admin != nil {
			d.admin.Close()
		}
	}()
	if err := d.setUp(); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		name string
		run  func() error
	}{
		{phaseEnroll, d.enroll},
		{phaseFirstMaps, d.firstMaps},
		{phaseIdle, func() error { time.Sleep(cfg.idle); return nil }},
		{phasePolicy, d.policyChange},
		{phaseJoin, d.join},
		{phaseHubJoin, d.hubJoin},
	} {
		if err := d.phase(p.name, p.run); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	u, err := readUsage(d.pid)
	if err != nil {
		return nil, err
	}
	d.res.PeakRSS = u.HWM
	return d.res, nil
}

// startCoordinator starts the binary (or, to profile, an in-process
// coordinator) and returns how to stop it.
func (d *driver) startCoordinator() (func(), error) {
	data := filepath.Join(d.cfg.workDir, "coord")
	logPath := filepath.Join(d.cfg.workDir, "coordinator.log")
	if d.cfg.mcpmesh != "" {
		d.res.Coordinator = "process"
		// MCPMESH_CONFIG keeps the CLI's remembered admin defaults in
		// the work directory instead of the user's.
		env := append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(d.cfg.workDir, "admin.json"))
		if err := initCoordinator(d.cfg.mcpmesh, data, env); err != nil {
			return nil, err
		}
		c, err := startCoordinator(d.cfg.mcpmesh, data, logPath, env)
		if err != nil {
			return nil, err
		}
		d.url, d.pid = c.url, c.pid()
		return c.stop, nil
	}
	d.res.Coordinator = "in-process"
	if err := coordinator.Init(data, "bench.internal", time.Now()); err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("coordinator log: %w", err)
	}
	srv, err := coordinator.Open(context.Background(), data, coordinator.Config{Logger: slog.New(slog.NewTextHandler(logf, nil))})
	if err != nil {
		logf.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		logf.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	d.url, d.pid = "https://"+ln.Addr().String(), os.Getpid()
	return func() {
		cancel()
		if err := <-served; err != nil {
			d.logf("coordinator: %v", err)
		}
		srv.Close()
		logf.Close()
	}, nil
}

// grants is the policy: every node may call the hubs' services.
func grants(tools ...string) api.PolicySource {
	q := make([]string, len(tools))
	for i, t := range tools {
		q[i] = strconv.Quote(t)
	}
	src := `{"grants": [{"src": ["*"], "dst": ["svc:hub", "svc:hub-2"], "tools": [` + strings.Join(q, ", ") + `]}]}`
	return api.PolicySource{Filename: "bench.hujson", Source: []byte(src)}
}

// setUp applies the first policy, creates the reusable token, enrolls the
// hub and starts the client processes.
func (d *driver) setUp() error {
	cred, err := adminclient.LoadCredential(filepath.Join(d.cfg.workDir, "coord", coordinator.FileAdmin))
	if err != nil {
		return err
	}
	if d.admin, err = adminclient.New(d.url, cred); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	if _, err := d.admin.ApplyPolicy(ctx, grants("a")); err != nil {
		return fmt.Errorf("apply policy: %w", err)
	}
	tok, err := d.admin.CreateToken(ctx, api.TokenCreateRequest{TTL: api.Duration(2 * time.Hour), Reusable: true})
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	d.token = tok.Token
	if d.hub, err = d.startNode(ctx, "hub", "hub"); err != nil {
		return err
	}
	per, extra := d.cfg.nodes/d.cfg.clients, d.cfg.nodes%d.cfg.clients
	for i := range d.cfg.clients {
		k := per
		if i < extra {
			k++
		}
		name := fmt.Sprintf("c%d", i)
		cmd := d.cfg.clientCmd([]string{"-url", d.url, "-token", d.token, "-prefix", name + "-",
			"-count", strconv.Itoa(k), "-concurrency", strconv.Itoa(d.cfg.conc), "-lifetime", (6 * d.cfg.timeout).String()})
		c, err := startClient(name, k, cmd, filepath.Join(d.cfg.workDir, name+".log"))
		if err != nil {
			return err
		}
		d.clients = append(d.clients, c)
	}
	return nil
}

// startNode enrolls a light node in this process, publishes service (if
// any) and starts its stream.
func (d *driver) startNode(ctx context.Context, name, service string) (*meshtest.LightNode, error) {
	l, err := meshtest.EnrollLight(ctx, d.url, d.token, name)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	if service != "" {
		if err := l.Client.SetServices(ctx, []api.ServiceSpec{{Name: service}}); err != nil {
			return nil, err
		}
	}
	d.runs.Add(1)
	go func() { defer d.runs.Done(); defer l.Client.Close(); _ = l.Run(d.ctx) }()
	return l, nil
}

// phase runs one phase and records the CPU it cost.
func (d *driver) phase(name string, run func() error) error {
	stopProfile, err := d.startProfile(name)
	if err != nil {
		return err
	}
	c0, err := readUsage(d.pid)
	if err != nil {
		return err
	}
	cl0 := d.clientCPU()
	t0 := time.Now()
	err = run()
	stopProfile()
	if err != nil {
		return err
	}
	c1, err := readUsage(d.pid)
	if err != nil {
		return err
	}
	d.res.CPU[name] = (c1.CPU - c0.CPU).Seconds()
	d.res.ClientCPU[name] = (d.clientCPU() - cl0).Seconds()
	d.logf("%-10s %6.2f s wall, coordinator %6.2f CPU-s, clients %6.2f CPU-s, coordinator RSS %d MiB (peak %d MiB)",
		name, time.Since(t0).Seconds(), d.res.CPU[name], d.res.ClientCPU[name], c1.RSS>>20, c1.HWM>>20)
	return nil
}

func (d *driver) clientCPU() time.Duration {
	var sum time.Duration
	for _, c := range d.clients {
		if u, err := readUsage(c.cmd.Process.Pid); err == nil {
			sum += u.CPU
		}
	}
	return sum
}

// startProfile starts a CPU profile of the phase in profiling mode.
func (d *driver) startProfile(name string) (func(), error) {
	if d.cfg.profileDir == "" {
		return func() {}, nil
	}
	path := filepath.Join(d.cfg.profileDir, fmt.Sprintf("n%d-%s.cpu.prof", d.cfg.nodes, strings.ReplaceAll(name, " ", "-")))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func (d *driver) writeHeapProfile() error {
	if d.cfg.profileDir == "" {
		return nil
	}
	f, err := os.Create(filepath.Join(d.cfg.profileDir, fmt.Sprintf("n%d-streams.heap.prof", d.cfg.nodes)))
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}

// watchHub watches the hub in the background; the returned function waits
// for the outcome.
func (d *driver) watchHub(ok cond) func() (time.Time, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.timeout)
	type out struct {
		t   time.Time
		err error
	}
	ch := make(chan out, 1)
	base := statsOf([]*meshtest.LightNode{d.hub})
	go func() {
		defer cancel()
		t, err := watch(ctx, []*meshtest.LightNode{d.hub}, ok, base)
		if err != nil {
			err = fmt.Errorf("hub: %w", err)
		}
		ch <- out{t, err}
	}()
	return func() (time.Time, error) { o := <-ch; return o.t, o.err }
}

// arm starts the same watch on every client.
func (d *driver) arm(until string, peers int) error {
	_, err := callAll(d.clients, request{Op: opArm, Until: until, Peers: peers, Timeout: d.cfg.timeout}, time.Minute)
	return err
}

// waitAll collects the armed watches and returns the latest time a node
// met its condition, and the replies.
func (d *driver) waitAll() (time.Time, []reply, error) {
	reps, err := callAll(d.clients, request{Op: opWait}, d.cfg.timeout+time.Minute)
	if err != nil {
		return time.Time{}, nil, err
	}
	var last time.Time
	for _, r := range reps {
		if t := time.Unix(0, r.Last); t.After(last) {
			last = t
		}
	}
	return last, reps, nil
}

func (d *driver) enroll() error {
	t0 := time.Now()
	reps, err := callAll(d.clients, request{Op: opEnroll, Timeout: d.cfg.timeout}, d.cfg.timeout+time.Minute)
	if err != nil {
		return err
	}
	d.res.EnrollAll = time.Since(t0).Seconds()
	got := 0
	for _, r := range reps {
		got += r.Nodes
	}
	if got != d.cfg.nodes {
		return fmt.Errorf("%d nodes enrolled, want %d", got, d.cfg.nodes)
	}
	return nil
}

// firstMaps starts every stream and waits for each node to hold its one
// peer, and the hub all N.
func (d *driver) firstMaps() error {
	if err := d.arm(untilPeers, 1); err != nil {
		return err
	}
	hubDone := d.watchHub(func(l *meshtest.LightNode) bool { return peerCount(l) == d.cfg.nodes })
	t0 := time.Now()
	if _, err := callAll(d.clients, request{Op: opStream}, time.Minute); err != nil {
		return err
	}
	last, _, err := d.waitAll()
	if err != nil {
		return err
	}
	if _, err := hubDone(); err != nil {
		return err
	}
	d.res.FirstMaps = last.Sub(t0).Seconds()
	u, err := readUsage(d.pid)
	if err != nil {
		return err
	}
	d.res.RSSStreams = u.RSS
	return d.writeHeapProfile()
}

// rtt is the median of trivial admin requests on an established connection.
func (d *driver) rtt() (time.Duration, error) {
	const samples = 51
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	var ds []time.Duration
	for i := range samples + 1 {
		t0 := time.Now()
		if _, err := d.admin.Policy(ctx, 0); err != nil {
			return 0, fmt.Errorf("rtt: %w", err)
		}
		if i > 0 { // the first one may open the connection
			ds = append(ds, time.Since(t0))
		}
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}

// policyChange applies cfg.repeat policy changes, one at a time, and waits
// for every node to hold each.
func (d *driver) policyChange() error {
	rtt, err := d.rtt()
	if err != nil {
		return err
	}
	d.res.RTT = rtt.Seconds()
	var reach, apply []float64
	var total, hubTotal uint64
	for i := range d.cfg.repeat {
		// Alternate between two policies that differ in one tool.
		src := grants("a", "b")
		if i%2 == 1 {
			src = grants("a")
		}
		r, a, err := d.onePolicyChange(src, &total, &hubTotal)
		if err != nil {
			return fmt.Errorf("change %d: %w", i+1, err)
		}
		reach, apply = append(reach, r), append(apply, a)
	}
	d.res.PolicyReach, d.res.PolicyReachMax = median(reach), slices.Max(reach)
	d.res.PolicyApply = median(apply)
	n := float64(d.cfg.repeat)
	d.res.PolicyBytesPerNode = float64(total) / float64(d.cfg.nodes) / n
	d.res.PolicyBytesHub = float64(hubTotal) / n
	return nil
}

// onePolicyChange applies src and returns how long it took to reach every
// node and how long the apply call took; it adds the bytes to the totals.
func (d *driver) onePolicyChange(src api.PolicySource, total, hubTotal *uint64) (reach, apply float64, err error) {
	if err := d.arm(untilNewer, 0); err != nil {
		return 0, 0, err
	}
	hubBase := statsOf([]*meshtest.LightNode{d.hub})
	hubVersion := d.hub.Version()
	hubDone := d.watchHub(func(l *meshtest.LightNode) bool { return l.Version() > hubVersion })
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := d.admin.ApplyPolicy(ctx, src); err != nil {
		return 0, 0, fmt.Errorf("apply policy: %w", err)
	}
	apply = time.Since(t0).Seconds()
	last, reps, err := d.waitAll()
	if err != nil {
		return 0, 0, err
	}
	hubLast, err := hubDone()
	if err != nil {
		return 0, 0, err
	}
	if hubLast.After(last) {
		last = hubLast
	}
	for _, r := range reps {
		*total += r.Bytes
		if d.res.PolicyBytesMin == 0 || r.MinBytes < d.res.PolicyBytesMin {
			d.res.PolicyBytesMin = r.MinBytes
		}
		d.res.PolicyBytesMax = max(d.res.PolicyBytesMax, r.MaxBytes)
	}
	_, hubBytes, _, _ := byteSpread([]*meshtest.LightNode{d.hub}, hubBase)
	*hubTotal += hubBytes
	return last.Sub(t0).Seconds(), apply, nil
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// clientBytes sums what every client's nodes accepted so far.
func (d *driver) clientBytes() (msgs, bytes uint64, err error) {
	reps, err := callAll(d.clients, request{Op: opStats}, time.Minute)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range reps {
		msgs += r.Messages
		bytes += r.Bytes
	}
	return msgs, bytes, nil
}

// join enrolls cfg.repeat more light nodes, one at a time, and waits for
// each to reach its one peer, the hub; then, once nothing more arrives,
// counts what the joins cost the nodes that do not see them.
func (d *driver) join() error {
	m0, b0, err := d.clientBytes()
	if err != nil {
		return err
	}
	var reach, enroll, hubBytes []float64
	for i := range d.cfg.repeat {
		r, e, hb, err := d.oneJoin(fmt.Sprintf("joiner-%d", i), d.cfg.nodes+1+i)
		if err != nil {
			return fmt.Errorf("join %d: %w", i+1, err)
		}
		reach, enroll, hubBytes = append(reach, r), append(enroll, e), append(hubBytes, float64(hb))
	}
	d.res.JoinReach, d.res.JoinReachMax = median(reach), slices.Max(reach)
	d.res.JoinEnroll = median(enroll)
	d.res.JoinBytesHub = uint64(median(hubBytes))
	// The other nodes may be sent something too; wait until their
	// counters have not moved for half a second (30 s at most).
	m1, b1 := m0, b0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		m, b, err := d.clientBytes()
		if err != nil {
			return err
		}
		if m == m1 && b == b1 {
			break
		}
		m1, b1 = m, b
	}
	d.res.JoinMsgsOthers = m1 - m0
	d.res.JoinBytesOthers = float64(b1-b0) / float64(d.cfg.nodes) / float64(d.cfg.repeat)
	return nil
}

// oneJoin enrolls name and waits for the hub to hold hubPeers peers; it
// returns the time that took, the enrollment call's and the hub's bytes.
func (d *driver) oneJoin(name string, hubPeers int) (reach, enroll float64, hubBytes uint64, err error) {
	hubBase := statsOf([]*meshtest.LightNode{d.hub})
	hubDone := d.watchHub(func(l *meshtest.LightNode) bool { return peerCount(l) == hubPeers })
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := d.startNode(ctx, name, ""); err != nil {
		return 0, 0, 0, err
	}
	enroll = time.Since(t0).Seconds()
	last, err := hubDone()
	if err != nil {
		return 0, 0, 0, err
	}
	_, hubBytes, _, _ = byteSpread([]*meshtest.LightNode{d.hub}, hubBase)
	return last.Sub(t0).Seconds(), enroll, hubBytes, nil
}

// hubJoin enrolls a second hub, which publishes a service every node may
// call, and waits for every node to hold it as its second peer.
func (d *driver) hubJoin() error {
	if err := d.arm(untilPeers, 2); err != nil {
		return err
	}
	hubDone := d.watchHub(func(l *meshtest.LightNode) bool { return peerCount(l) == d.cfg.nodes+d.cfg.repeat+1 })
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := d.startNode(ctx, "hub-2", "hub-2"); err != nil {
		return err
	}
	last, reps, err := d.waitAll()
	if err != nil {
		return err
	}
	if _, err := hubDone(); err != nil {
		return err
	}
	d.res.HubJoinReach = last.Sub(t0).Seconds()
	var total uint64
	for _, r := range reps {
		total += r.Bytes
	}
	d.res.HubJoinBytesPerNode = float64(total) / float64(d.cfg.nodes)
	return nil
}
