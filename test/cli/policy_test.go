package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newCoordinator initialises and starts a coordinator process; admin
// commands then work without flags through the remembered defaults.
func newCoordinator(t *testing.T) (*cli, string) {
	dir := t.TempDir()
	c := &cli{t: t, env: append(os.Environ(), "MCPMESH_CONFIG="+filepath.Join(dir, "admin.json"), "MCPMESH_STATE=", "MCPMESH_COORDINATOR=", "MCPMESH_ADMIN=")}
	coord := filepath.Join(dir, "coord")
	addr := freePort(t)
	c.ok("coordinator", "init", "--data", coord, "--trust-domain", "acme.internal")
	c.start("coordinator", "coordinator", "run", "--data", coord, "--listen", addr)
	waitFor(t, "coordinator", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return c, dir
}

const goodPolicy = `{
  // Clinicians read charts.
  "groups": { "group:clinical": ["node:ward-7-laptop"] },
  "grants": [
    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*"] },
  ],
  "tests": [
    { "src": "node:ward-7-laptop", "dst": "svc:ehr", "allow": ["read_chart"], "deny": ["delete_chart"] },
  ],
}
`

func TestCLIPolicyWorkflow(t *testing.T) {
	c, dir := newCoordinator(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("acl.hujson", goodPolicy)
	bad := write("bad.hujson", strings.Replace(goodPolicy, `"group:clinical"],`, `"group:nobody"],`, 1))

	if r := c.ok("policy", "check", good); !strings.Contains(r.stderr, "1 tests passed") {
		t.Fatalf("check: %+v", r)
	}
	r := c.run("policy", "check", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "bad.hujson:5:15:") || !strings.Contains(r.stderr, "group:nobody") {
		t.Fatalf("check of a bad file: exit %d, stderr %q; want an error at 5:15 naming group:nobody", r.code, r.stderr)
	}
	if r := c.run("policy", "get"); r.code != 1 || !strings.Contains(r.stderr, "no policy has been applied") {
		t.Fatalf("get before any apply: %+v", r)
	}

	c.ok("policy", "apply", good)
	if r := c.run("policy", "apply", bad); r.code != 1 || !strings.Contains(r.stderr, ":5:15:") || !strings.Contains(r.stderr, "nothing was applied") {
		t.Fatalf("apply of a bad file: %+v", r)
	}
	v2 := write("acl2.hujson", strings.Replace(goodPolicy, `"read_*"`, `"read_*", "search_patients"`, 1))
	c.ok("policy", "apply", v2)

	if got := c.ok("policy", "get", "--version", "1").stdout; got != goodPolicy {
		t.Fatalf("get v1 returned something else than what was applied:\n%s", got)
	}
	d := c.ok("policy", "diff", "1", "2").stdout
	if !strings.Contains(d, `-    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*"] },`) ||
		!strings.Contains(d, `+    { "src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*", "search_patients"] },`) {
		t.Fatalf("diff:\n%s", d)
	}
	c.ok("policy", "rollback", "1")
	h := c.ok("policy", "history").stdout
	if !strings.Contains(h, "rollback to v1") || !strings.Contains(h, "spiffe://acme.internal/admin/admin") || strings.Count(h, "\n") != 4 {
		t.Fatalf("history:\n%s", h)
	}
	if got := c.ok("policy", "get").stdout; got != goodPolicy {
		t.Fatalf("current policy after rollback:\n%s", got)
	}

	// explain needs the node to exist: enroll one.
	tok := strings.TrimSpace(c.ok("token", "create").stdout)
	state := filepath.Join(dir, "laptop")
	c.start("laptop", "up", "--token", tok, "--state", state, "--hostname", "ward-7-laptop", "--coordinator", "https://"+readURL(t, dir))
	waitFor(t, "laptop enrolled", func() bool { return c.run("status", "--state", state).code == 0 })
	if r := c.ok("policy", "explain", "--src", "node:ward-7-laptop", "--dst", "svc:ehr", "--tool", "delete_chart"); strings.TrimSpace(r.stdout) != "deny: no grant matches (default deny)" {
		t.Fatalf("explain deny: %q", r.stdout)
	}
	if r := c.ok("policy", "explain", "--src", "node:ward-7-laptop", "--dst", "svc:ehr", "--tool", "read_chart"); strings.TrimSpace(r.stdout) != "allow: grant at acl.hujson:5:5" {
		t.Fatalf("explain allow: %q", r.stdout)
	}
}

// readURL reads the coordinator URL that `coordinator run` remembered.
func readURL(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "admin.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "https://")
	j := strings.Index(s[i:], `"`)
	return s[i+len("https://") : i+j]
}
