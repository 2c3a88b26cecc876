// Package cli runs the real mcpmesh binary the way a user and scripts do:
// separate processes for the coordinator and each node, talking over
// loopback, and checks the CLI contract (token alone on stdout, one-line
// errors, exit status).
package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

var bin string

func TestMain(m *testing.M) { os.Exit(meshtest.RunWithBinary(m, &bin)) }

type cli struct {
	t   *testing.T
	env []string
}

type result struct {
	stdout, stderr string
	code           int
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = c.env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run %v: %v", args, err)
	}
	return result{so.String(), se.String(), code}
}

func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("mcpmesh %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// start runs a long-lived command (coordinator run, up) until the test ends.
func (c *cli) start(name string, args ...string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = c.env
	logf, err := os.Create(filepath.Join(c.t.TempDir(), name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if c.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			c.t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCLIRunsAMeshInSeparateProcesses(t *testing.T) {
	dir := t.TempDir()
	c := &cli{t: t, env: append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(dir, "admin.json"), "MCPMESH_STATE=", "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	coord := filepath.Join(dir, "coord")
	addr := freePort(t)
	url := "https://" + addr

	c.ok("coordinator", "init", "--data", coord, "--trust-domain", "acme.internal")
	if r := c.run("coordinator", "init", "--data", coord, "--trust-domain", "acme.internal"); r.code != 1 || !strings.Contains(r.stderr, "refusing to overwrite") {
		t.Fatalf("second init: %+v", r)
	}
	c.start("coordinator", "coordinator", "run", "--data", coord, "--listen", addr)
	waitFor(t, "coordinator", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})

	// The token is alone on stdout; the admin defaults from init/run work
	// without flags, and explicit flags work too.
	tokenRE := regexp.MustCompile(`^mcpmesh-1\.[A-Za-z0-9._-]+\n$`)
	r := c.ok("token", "create", "--tags", "tag:server", "--ttl", "1h")
	if !tokenRE.MatchString(r.stdout) {
		t.Fatalf("token create stdout = %q, want the token alone", r.stdout)
	}
	tokA := strings.TrimSpace(r.stdout)
	tokB := strings.TrimSpace(c.ok("token", "create", "--coordinator", url, "--data", coord).stdout)

	stateA, stateB := filepath.Join(dir, "node-a"), filepath.Join(dir, "node-b")
	c.start("node-a", "up", "--coordinator", url, "--token", tokA, "--state", stateA, "--hostname", "node-a")
	c.start("node-b", "up", "--coordinator", url, "--token", tokB, "--state", stateB, "--hostname", "node-b")

	waitFor(t, "node-a to see node-b", func() bool {
		r := c.run("status", "--state", stateA)
		return r.code == 0 && strings.Contains(r.stdout, "node-b")
	})
	st := c.ok("status", "--state", stateA).stdout
	for _, want := range []string{"spiffe://acme.internal/node/node-a", "100.64.", "expires", "connected"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	if r := c.ok("ping", "node-b", "--state", stateA); !strings.Contains(r.stdout, "pong from node-b") {
		t.Fatalf("ping: %+v", r)
	}
	if r := c.run("ping", "nobody", "--state", stateA); r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "no peer named") {
		t.Fatalf("ping of unknown peer: %+v", r)
	}

	list := c.ok("nodes", "list").stdout
	if !strings.Contains(list, "node-a") || !strings.Contains(list, "tag:server") || !strings.Contains(list, "online") {
		t.Fatalf("nodes list:\n%s", list)
	}

	c.ok("nodes", "revoke", "node-b")
	waitFor(t, "node-a to drop node-b", func() bool {
		r := c.run("status", "--state", stateA)
		return r.code == 0 && !strings.Contains(r.stdout, "node-b")
	})
	if r := c.run("ping", "node-b", "--state", stateA); r.code == 0 {
		t.Fatal("ping to a revoked node succeeded")
	}
	if r := c.run("nodes", "revoke", "node-b"); r.code != 1 || !strings.Contains(r.stderr, "already revoked") {
		t.Fatalf("second revoke: %+v", r)
	}

	c.ok("down", "--state", stateA)
	waitFor(t, "node-a to exit", func() bool { return c.run("status", "--state", stateA).code != 0 })
	if r := c.run("status", "--state", stateA); !strings.Contains(r.stderr, "no node is running") {
		t.Fatalf("status of a stopped node: %+v", r)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	c := &cli{t: t, env: append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(t.TempDir(), "admin.json"), "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"coordinator", "init"}, 2, "--data and --trust-domain are required"},
		{[]string{"token", "create"}, 1, "which coordinator?"},
		{[]string{"token", "create", "--coordinator", "https://127.0.0.1:1"}, 1, "admin credential"},
		{[]string{"up", "--state", t.TempDir()}, 1, "--coordinator URL and --token"},
		{[]string{"up", "--state", t.TempDir(), "--coordinator", "https://127.0.0.1:1", "--token", "garbage"}, 1, "malformed"},
		{[]string{"status", "--state", t.TempDir()}, 1, "no node is running"},
		{[]string{"ping"}, 2, "wrong number of arguments"},
		{[]string{"coordinator", "run", "--data", t.TempDir(), "--netmap-ttl", "10s"}, 2, "--netmap-ttl 10s is too short"},
		{[]string{"coordinator", "run", "--data", t.TempDir(), "--svid-ttl", "-1h"}, 2, "--svid-ttl -1h0m0s is too short"},
		{[]string{"coordinator", "run", "--data", t.TempDir(), "--read-header-timeout", "0s"}, 2, "--read-header-timeout 0s is too short"},
		{[]string{"coordinator", "run", "--data", t.TempDir(), "--idle-timeout", "500ms"}, 2, "--idle-timeout 500ms is too short"},
		{[]string{"coordinator", "run", "--data", t.TempDir(), "--max-conns", "2"}, 2, "--max-conns 2 is too small"},
		{[]string{"serve", "docs", "--state", t.TempDir(), "--stdio", "cat", "--upstream-user", "root"}, 2, "--upstream-user applies to --upstream"},
	} {
		r := c.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("mcpmesh %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.want)
		}
		if r.code == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("mcpmesh %s: error is not one line: %q", strings.Join(tc.args, " "), r.stderr)
		}
	}
}

// A connection that sends nothing is closed once --read-header-timeout
// runs out, as a slowloris client would see it: the flag reaches the
// server (the default would hold it for 10 s).
func TestCoordinatorRunTakesItsTimeoutFromTheFlag(t *testing.T) {
	dir := t.TempDir()
	c := &cli{t: t, env: append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(dir, "admin.json"), "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	coord := filepath.Join(dir, "coord")
	addr := freePort(t)
	c.ok("coordinator", "init", "--data", coord, "--trust-domain", "acme.internal")
	c.start("coordinator", "coordinator", "run", "--data", coord, "--listen", addr, "--read-header-timeout", "1s", "--max-conns", "16")
	var conn net.Conn
	waitFor(t, "coordinator", func() bool {
		var err error
		conn, err = net.Dial("tcp", addr)
		return err == nil
	})
	defer conn.Close()
	start := time.Now()
	if err := conn.SetReadDeadline(start.Add(8 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(make([]byte, 1))
	held := time.Since(start)
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent connection after %s: read %d bytes, %v; want it closed", held.Round(time.Millisecond), n, err)
	}
	if held > 5*time.Second {
		t.Fatalf("silent connection held for %s with --read-header-timeout 1s", held.Round(time.Millisecond))
	}
}

// TestDemoTellsTheWholeStory keeps `make demo` (the README's first command)
// working: it must finish and show an allowed call, a denial with its rule,
// the filtered list, the audit trail and the revocation.
func TestDemoTellsTheWholeStory(t *testing.T) {
	c := &cli{t: t, env: os.Environ()}
	r := c.ok("demo")
	for _, want := range []string{
		"tools/list: read_chart, search_patients",
		`read_chart    allowed "chart of p-0042: BP 120/80"`,
		`DENIED  tool "delete_chart" denied for spiffe://demo.mcpmesh/node/ward-7-laptop: no grant matches (default deny)`,
		"when condition false",
		"deny  spiffe://demo.mcpmesh/node/ward-7-laptop",
		"billing-bot → ehr-server after revocation: refused",
		"demo finished",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestRememberedAdminDefaultsOthersCouldWriteAreNotUsed: admin commands
// remember their coordinator and credential in a file; one in a directory
// another user can write could point them at a coordinator of that user's,
// so it is ignored, with a warning, and the command asks which coordinator.
func TestRememberedAdminDefaultsOthersCouldWriteAreNotUsed(t *testing.T) {
	dir := meshtest.SharedDir(t)
	cfg := filepath.Join(dir, "admin.json")
	if err := os.WriteFile(cfg, []byte(`{"coordinator":"https://127.0.0.1:1","admin":"/planted/admin.pem"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, env: append(os.Environ(), "MCPMESH_CONFIG="+cfg, "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	r := c.run("token", "create")
	if r.code == 0 || !strings.Contains(r.stderr, "not using the remembered admin defaults") || !strings.Contains(r.stderr, "which coordinator?") {
		t.Fatalf("token create with planted defaults: exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "/planted/") {
		t.Fatalf("the planted credential was used: %q", r.stderr)
	}
}
