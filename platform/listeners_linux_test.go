package platform

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

// procNetTCP6Sample is /proc/net/tcp6 of a namespace on x86-64 with
// listeners on [::1]:8000, [::]:8001, [::ffff:127.0.0.1]:8002 and
// [fd00:77::1]:8003, plus one connection (last line, added by hand).
const procNetTCP6Sample = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615001 1 0000000006f8cb1e 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615002 1 0000000032ee0cad 100 0 0 10 0
   2: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615000 1 00000000328e0c09 100 0 0 10 0
   3: 770000FD000000000000000001000000:1F43 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615003 1 0000000092f5cbfa 100 0 0 10 0
   4: 770000FD000000000000000001000000:1F43 770000FD000000000000000002000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 615010 1 0000000092f5cbfb 20 4 30 10 -1
`

// procNetTCPSample is /proc/net/tcp of the same namespace: listeners on
// 0.0.0.0:8004, 10.77.0.1:8005 and 127.0.0.1:8006 (owned by uid 1000),
// and both ends of a connection to the last.
const procNetTCPSample = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615004 1 000000005a4c9573 100 0 0 10 0                    
   1: 01004D0A:1F45 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 615005 1 000000004f077203 100 0 0 10 0                    
   2: 0100007F:1F46 00000000:0000 0A 00000000:00000001 00:00000000 00000000  1000        0 615006 2 00000000daec10c8 100 0 0 10 0                    
   3: 0100007F:1F46 0100007F:9ABA 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000f3808915 20 0 0 10 -1                         
   4: 0100007F:9ABA 0100007F:1F46 01 00000000:00000000 00:00000000 00000000     0        0 615007 2 00000000c44803d2 20 0 0 10 -1                    
`

// requireLittleEndian skips tests whose /proc samples were taken on a
// little-endian host: the kernel prints addresses in host byte order.
func requireLittleEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the /proc/net samples come from a little-endian host")
	}
}

func TestParseProcNetTCP6ReadsEachKindOfIPv6Address(t *testing.T) {
	requireLittleEndian(t)
	got, err := parseProcNetTCP([]byte(procNetTCP6Sample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{Addr: netip.MustParseAddrPort("[::]:8001"), Inode: 615001},
		{Addr: netip.MustParseAddrPort("[::ffff:127.0.0.1]:8002"), Inode: 615002},
		{Addr: netip.MustParseAddrPort("[::1]:8000"), Inode: 615000},
		{Addr: netip.MustParseAddrPort("[fd00:77::1]:8003"), Inode: 615003},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseProcNetTCP(tcp6 sample) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseProcNetTCPReadsIPv4ListenersAndSkipsConnections(t *testing.T) {
	requireLittleEndian(t)
	got, err := parseProcNetTCP([]byte(procNetTCPSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{Addr: netip.MustParseAddrPort("0.0.0.0:8004"), Inode: 615004},
		{Addr: netip.MustParseAddrPort("10.77.0.1:8005"), Inode: 615005},
		{Addr: netip.MustParseAddrPort("127.0.0.1:8006"), Inode: 615006, UID: 1000},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseProcNetTCP(tcp sample) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseProcNetTCPRejectsListenersItCannotRead(t *testing.T) {
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for _, line := range []string{
		"   0: 00000000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0\n",
		"   0: 00000000:1F4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
		"   0: 0000000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
		"   0: 0000000G:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
		"   0: 000000001F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
		"   0: 00000000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 -1 1\n",
		"   0: 00000000:1F44 00000000:0000 XX 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
	} {
		if got, err := parseProcNetTCP([]byte(header + line)); err == nil {
			t.Errorf("parseProcNetTCP(%q) = %+v, want an error", line, got)
		}
	}
	if got, err := parseProcNetTCP([]byte(header)); err != nil || len(got) != 0 {
		t.Errorf("parseProcNetTCP(header only) = %+v, %v; want nothing", got, err)
	}
}

// formatProcNetLine prints l the way the kernel does in /proc/net/tcp(6).
func formatProcNetLine(l Listener) string {
	b := l.Addr.Addr().AsSlice()
	var hex strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&hex, "%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	return fmt.Sprintf("   0: %s:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000 %5d        0 %d 1 0000000000000000 100 0 0 10 0\n",
		hex.String(), l.Addr.Port(), l.UID, l.Inode)
}

// FuzzParseProcNetTCP proves the parser never panics, and that whatever it
// reads it reads back the same once printed the kernel's way.
func FuzzParseProcNetTCP(f *testing.F) {
	f.Add([]byte(procNetTCP6Sample))
	f.Add([]byte(procNetTCPSample))
	f.Add([]byte(""))
	f.Add([]byte("   0: 00000000:1F44 00000000:0000 0A 0 0 0 0 0 1\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ls, err := parseProcNetTCP(data)
		if err != nil {
			return
		}
		if len(ls) > bytes.Count(data, []byte("\n"))+1 {
			t.Fatalf("%d listeners from %d lines", len(ls), bytes.Count(data, []byte("\n"))+1)
		}
		for _, l := range ls {
			if !l.Addr.IsValid() || l.PID != 0 || l.Process != "" {
				t.Fatalf("parsed %+v", l)
			}
			again, err := parseProcNetTCP([]byte(formatProcNetLine(l)))
			if err != nil || len(again) != 1 || again[0] != l {
				t.Fatalf("%+v printed and parsed again = %+v, %v", l, again, err)
			}
		}
	})
}

// TestListListenersFindsThisProcessesSockets opens listeners and a
// connection, and proves the listeners are listed with this process as
// their owner and the connection is not.
func TestListListenersFindsThisProcessesSockets(t *testing.T) {
	var want []netip.AddrPort
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil && strings.HasPrefix(addr, "[") {
			t.Logf("no IPv6 loopback: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		want = append(want, netip.MustParseAddrPort(ln.Addr().String()))
	}
	c, err := net.Dial("tcp", want[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}

	ls, err := ListListeners()
	if err != nil {
		t.Fatalf("ListListeners: %v", err)
	}
	for _, w := range want {
		i := slices.IndexFunc(ls, func(l Listener) bool { return l.Addr == w })
		if i < 0 {
			t.Errorf("ListListeners lacks %s: %+v", w, ls)
			continue
		}
		if l := ls[i]; l.PID != os.Getpid() || l.Process != strings.TrimSpace(string(comm)) || l.Inode == 0 {
			t.Errorf("listener %s = %+v, want PID %d, process %q", w, l, os.Getpid(), strings.TrimSpace(string(comm)))
		}
	}
	if slices.ContainsFunc(ls, func(l Listener) bool { return l.Addr.Port() == client.Port() }) {
		t.Errorf("ListListeners lists the connection from %s", client)
	}
}

// TestListListenersReadsTheCallingThreadsNamespace proves the lister
// reads the namespace its caller is in: a thread that entered a new
// namespace sees the listener it opened there and not the process's other
// listeners, while every other goroutine still sees those.
func TestListListenersReadsTheCallingThreadsNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	outsideAddr := netip.MustParseAddrPort(outside.Addr().String())

	type result struct {
		ls     []Listener
		inside netip.AddrPort
		err    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime discards the thread
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err != nil {
			return
		}
		ln, err := net.Listen("tcp6", "[::]:0")
		if r.err = err; err != nil {
			return
		}
		defer ln.Close()
		r.inside = netip.MustParseAddrPort(ln.Addr().String())
		r.ls, r.err = ListListeners()
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.ls) != 1 || r.ls[0].Addr != r.inside || r.ls[0].PID != os.Getpid() {
		t.Errorf("ListListeners in a new namespace = %+v; want only %s, owned by this process", r.ls, r.inside)
	}
	ls, err := ListListeners()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ls, func(l Listener) bool { return l.Addr == outsideAddr }) {
		t.Errorf("ListListeners after another thread left the namespace lacks %s: %+v", outsideAddr, ls)
	}
}

// TestListListenersNamesOwnersFromProcFDs runs the lister on a made-up
// /proc: a socket two processes share goes to the lower PID, one whose
// owner cannot be read keeps PID 0, and a missing tcp6 is no error.
func TestListListenersNamesOwnersFromProcFDs(t *testing.T) {
	requireLittleEndian(t)
	proc := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(proc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(name, target string) {
		t.Helper()
		p := filepath.Join(proc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	write("net/tcp", procNetTCPSample)
	link("120/fd/3", "socket:[615004]") // the worker
	link("120/fd/4", "socket:[615007]") // a connection, not a listener
	write("120/comm", "nginx\n")
	link("7/fd/6", "socket:[615004]") // the master, which shares it
	link("7/fd/0", "/dev/null")
	write("7/comm", "nginx\n")
	link("300/fd/9", "socket:[615005]")
	write("300/comm", "mcp-server\n")
	write("301/comm", "secret\n") // no fd directory: not readable
	link("self", "300")
	write("sys/fd/1", "")

	got, err := listListeners(filepath.Join(proc, "net"), proc)
	if err != nil {
		t.Fatalf("listListeners: %v", err)
	}
	want := []Listener{
		{Addr: netip.MustParseAddrPort("0.0.0.0:8004"), Inode: 615004, PID: 7, Process: "nginx"},
		{Addr: netip.MustParseAddrPort("10.77.0.1:8005"), Inode: 615005, PID: 300, Process: "mcp-server"},
		{Addr: netip.MustParseAddrPort("127.0.0.1:8006"), Inode: 615006, UID: 1000},
	}
	if !slices.Equal(got, want) {
		t.Errorf("listListeners =\n%+v\nwant\n%+v", got, want)
	}

	if err := os.Remove(filepath.Join(proc, "net/tcp")); err != nil {
		t.Fatal(err)
	}
	if _, err := listListeners(filepath.Join(proc, "net"), proc); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("listListeners without net/tcp: %v, want a not-exist error", err)
	}
}

// The namespace test runs the scanner in a child process started with
// "ip netns exec" in a fresh network namespace, where it may bind
// non-loopback addresses without opening anything on the host's network.
// The child is this test binary with exposureChildEnv set: it starts the
// servers, scans, writes one JSON exposureReport on stdout and exits.
const (
	exposureChildEnv      = "MCPMESH_EXPOSURE_TEST_CHILD"
	exposureEverythingEnv = "MCPMESH_EXPOSURE_TEST_EVERYTHING"
	exposureLANAddr       = "10.77.0.1"
)

func TestMain(m *testing.M) {
	if os.Getenv(exposureChildEnv) == "1" {
		os.Exit(runExposureChild(os.Getenv(exposureEverythingEnv), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// exposureReport is what the child saw.
type exposureReport struct {
	PID           int
	Ports         map[string]uint16
	EverythingPID int `json:",omitzero"`
	Found         []Exposure
	Err           string `json:",omitempty"`
}

// runExposureChild starts, inside the namespace, Go SDK servers on every
// interface, on the LAN address and on loopback, a web server on every
// interface, and mcp-server-everything if its path is given; then scans
// and reports. Every server stays open until the scan is over.
func runExposureChild(everything string, out, logw io.Writer) int {
	rep := exposureReport{PID: os.Getpid(), Ports: make(map[string]uint16)}
	var closers []func()
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	err := func() error {
		serve := func(name, network, addr string, h http.Handler) error {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
			done := make(chan struct{})
			go func() { // ends when Close closes ln
				defer close(done)
				srv.Serve(ln)
			}()
			closers = append(closers, func() { srv.Close(); <-done })
			rep.Ports[name] = netip.MustParseAddrPort(ln.Addr().String()).Port()
			return nil
		}
		mcpMux := func(name string) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("/mcp", streamableHandler(newSDKServer(name, "1.0.0"), nil))
			return mux
		}
		for _, s := range []struct {
			name, network, addr string
			h                   http.Handler
		}{
			{"wildcard", "tcp4", "0.0.0.0:0", mcpMux("wildcard-mcp")},
			{"wildcard6", "tcp", "[::]:0", mcpMux("wildcard6-mcp")}, // dual-stack
			{"lan", "tcp4", exposureLANAddr + ":0", mcpMux("lan-mcp")},
			{"loopback", "tcp4", "127.0.0.1:0", mcpMux("loopback-mcp")},
			{"plain", "tcp", "[::]:0", http.FileServerFS(os.DirFS("/nonexistent"))},
		} {
			if err := serve(s.name, s.network, s.addr, s.h); err != nil {
				return err
			}
		}
		if everything != "" {
			stop, pid, port, err := startEverything(everything, logw)
			if err != nil {
				return err
			}
			closers = append(closers, stop)
			rep.EverythingPID, rep.Ports["everything"] = pid, port
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A generous probe timeout: node answers its first request slowly
		// on a busy machine.
		found, err := ScanExposure(ctx, ScanOptions{Timeout: 5 * time.Second})
		rep.Found = found
		return err
	}()
	if err != nil {
		rep.Err = err.Error()
	}
	if err := json.NewEncoder(out).Encode(rep); err != nil {
		return 1
	}
	return 0
}

// startEverything runs mcp-server-everything's Streamable HTTP server on a
// free port and waits (up to 15 s) until it listens. stop kills it.
func startEverything(path string, logw io.Writer) (stop func(), pid int, port uint16, err error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return nil, 0, 0, err
	}
	port = netip.MustParseAddrPort(ln.Addr().String()).Port()
	ln.Close()

	cmd := exec.Command(path, "streamableHttp")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(int(port)))
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, 0, 0, fmt.Errorf("start %s: %w", path, err)
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ls, err := ListListeners()
		if err != nil {
			stop()
			return nil, 0, 0, err
		}
		if slices.ContainsFunc(ls, func(l Listener) bool { return l.Addr.Port() == port }) {
			return stop, cmd.Process.Pid, port, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, 0, 0, fmt.Errorf("%s did not listen on port %d within 15s", path, port)
		}
	}
}

// TestScanExposureFindsOnlyMCPServersReachableOffTheHost runs the real
// scan in a namespace with a non-loopback address and proves it reports
// exactly the MCP servers bound to every interface or to that address,
// owned by the process that runs them, and not an MCP server on loopback
// or a web server on every interface.
func TestScanExposureFindsOnlyMCPServersReachableOffTheHost(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := fmt.Sprintf("mcpmesh-exp%d", os.Getpid())
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	netnstest.IP(t, "netns", "add", ns)
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	netnstest.IP(t, "-n", ns, "link", "add", "exp0", "type", "veth", "peer", "name", "exp1")
	netnstest.IP(t, "-n", ns, "addr", "add", exposureLANAddr+"/24", "dev", "exp0")
	netnstest.IP(t, "-n", ns, "link", "set", "exp0", "up")
	netnstest.IP(t, "-n", ns, "link", "set", "exp1", "up")

	everything, lookErr := exec.LookPath("mcp-server-everything")
	if lookErr != nil {
		everything = ""
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), exposureChildEnv+"=1", exposureEverythingEnv+"="+everything)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child in %s: %v\n%s", ns, err, stderr.Bytes())
	}
	var rep exposureReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child report %q: %v\n%s", out, err, stderr.Bytes())
	}
	if rep.Err != "" {
		t.Fatalf("child: %s\n%s", rep.Err, stderr.Bytes())
	}
	byPort := make(map[uint16]Exposure)
	for i, e := range rep.Found {
		byPort[e.Listener.Addr.Port()] = e
		if i > 0 && rep.Found[i-1].Listener.Addr.Port() > e.Listener.Addr.Port() {
			t.Errorf("exposures not sorted by port: %v", rep.Found)
		}
	}
	wantPorts := []uint16{rep.Ports["wildcard"], rep.Ports["wildcard6"], rep.Ports["lan"]}
	if everything != "" {
		wantPorts = append(wantPorts, rep.Ports["everything"])
	}
	if len(rep.Found) != len(wantPorts) {
		t.Errorf("scan found %d exposures, want %d (ports %v):\n%+v", len(rep.Found), len(wantPorts), wantPorts, rep.Found)
	}
	for name, port := range rep.Ports {
		if _, found := byPort[port]; found && (name == "loopback" || name == "plain") {
			t.Errorf("scan reports the %s server on port %d: %+v", name, port, byPort[port])
		}
	}

	t.Run("Go SDK servers", func(t *testing.T) {
		for _, w := range []struct {
			name, bound, probed, server string
		}{
			{"wildcard", "0.0.0.0", "127.0.0.1", "wildcard-mcp"},
			{"wildcard6", "::", "[::1]", "wildcard6-mcp"},
			{"lan", exposureLANAddr, exposureLANAddr, "lan-mcp"},
		} {
			port := rep.Ports[w.name]
			e, ok := byPort[port]
			if !ok {
				t.Errorf("scan misses the %s server on port %d", w.name, port)
				continue
			}
			wantAddr := netip.AddrPortFrom(netip.MustParseAddr(w.bound), port)
			wantURL := fmt.Sprintf("http://%s:%d/mcp", w.probed, port)
			if e.Listener.Addr != wantAddr || e.Listener.PID != rep.PID || e.Listener.Process == "" ||
				e.MCP.ServerName != w.server || e.MCP.Transport != TransportStreamableHTTP || e.MCP.URL != wantURL {
				t.Errorf("%s server reported as %+v; want bound to %s, PID %d, server %q at %s",
					w.name, e, wantAddr, rep.PID, w.server, wantURL)
			}
		}
	})

	t.Run("mcp-server-everything", func(t *testing.T) {
		if everything == "" {
			if os.Getenv("CI") != "" {
				t.Fatalf("mcp-server-everything is not on PATH, and CI must run this: %v", lookErr)
			}
			t.Skipf("mcp-server-everything is not on PATH: %v", lookErr)
		}
		port := rep.Ports["everything"]
		e, ok := byPort[port]
		if !ok {
			t.Fatalf("scan misses mcp-server-everything on port %d\n%s", port, stderr.Bytes())
		}
		if !e.Listener.Addr.Addr().IsUnspecified() || e.Listener.PID != rep.EverythingPID ||
			e.MCP.ServerName != "mcp-servers/everything" || e.MCP.Transport != TransportStreamableHTTP {
			t.Errorf("mcp-server-everything reported as %+v; want bound to every interface, PID %d, server %q",
				e, rep.EverythingPID, "mcp-servers/everything")
		}
	})
}
