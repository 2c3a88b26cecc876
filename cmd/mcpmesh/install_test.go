package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/identity"
)

// runMain runs the CLI in-process and returns what it wrote and its exit
// status.
func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var so, se bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &so, stderr: &se, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, args)
	return so.String(), se.String(), code
}

func newJoinToken(t *testing.T) string {
	t.Helper()
	tok, err := identity.NewToken(identity.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func skipUnlessLinux(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd layout is Linux's")
	}
}

func TestInstallServiceUnderRootKeepsTheTokenOutOfTheUnit(t *testing.T) {
	skipUnlessLinux(t)
	root := t.TempDir()
	token := newJoinToken(t)
	stdout, stderr, code := runMain(t, "install-service", "--root", root,
		"--coordinator", "https://10.0.0.1:7443", "--token", token,
		"--hostname", "web 1", "--binary", "/usr/local/bin/mcpmesh")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	if strings.Contains(stderr, token) {
		t.Error("stderr shows the token")
	}

	unitPath := filepath.Join(root, "etc/systemd/system/mcpmesh.service")
	wantMode(t, unitPath, 0o644)
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unit), token) {
		t.Fatal("the unit file holds the join token")
	}
	const exec = `ExecStart=/usr/local/bin/mcpmesh up --tun --state /var/lib/mcpmesh --coordinator https://10.0.0.1:7443 --hostname "web 1" --token-file /var/lib/mcpmesh/join-token` + "\n"
	if !strings.Contains(string(unit), exec) {
		t.Errorf("unit lacks %q:\n%s", exec, unit)
	}

	state := filepath.Join(root, "var/lib/mcpmesh")
	wantMode(t, state, 0o700)
	tokenPath := filepath.Join(state, "join-token")
	wantMode(t, tokenPath, 0o600)
	b, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != token {
		t.Errorf("join-token holds %q, want the token", got)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 1 {
		t.Errorf("state directory holds %d entries, want only join-token (no temp files left)", len(ents))
	}

	// Installing again replaces the unit in place.
	if _, stderr, code := runMain(t, "install-service", "--root", root, "--coordinator", "https://10.0.0.2:7443", "--token", token, "--binary", "/usr/local/bin/mcpmesh", "--tun=false"); code != 0 {
		t.Fatalf("second install: exit %d: %s", code, stderr)
	}
	if unit, _ := os.ReadFile(unitPath); !strings.Contains(string(unit), "--coordinator https://10.0.0.2:7443") || strings.Contains(string(unit), "--tun") {
		t.Errorf("second install did not replace the unit:\n%s", unit)
	}

	stdout, stderr, code = runMain(t, "install-service", "--root", root, "--remove")
	if code != 0 || stdout != "" {
		t.Fatalf("--remove: exit %d, stdout %q: %s", code, stdout, stderr)
	}
	for _, p := range []string{unitPath, tokenPath} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("--remove left %s (%v)", p, err)
		}
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("--remove took the node's state directory: %v", err)
	}
	// Removing what is not there is not an error.
	if _, stderr, code := runMain(t, "install-service", "--root", root, "--remove"); code != 0 {
		t.Errorf("second --remove: exit %d: %s", code, stderr)
	}
}

func TestInstallServiceWithoutTokenNeedsAnEnrolledNode(t *testing.T) {
	skipUnlessLinux(t)
	root := t.TempDir()
	_, stderr, code := runMain(t, "install-service", "--root", root, "--binary", "/usr/local/bin/mcpmesh")
	if code != 2 || !strings.Contains(stderr, "holds no enrolled node") {
		t.Fatalf("exit %d, stderr %q; want a usage error asking for --token", code, stderr)
	}
	state := filepath.Join(root, "var/lib/mcpmesh")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "node.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runMain(t, "install-service", "--root", root, "--binary", "/usr/local/bin/mcpmesh"); code != 0 {
		t.Fatalf("enrolled node: exit %d: %s", code, stderr)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/mcpmesh.service"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unit), "--token-file") || strings.Contains(string(unit), "--coordinator") {
		t.Errorf("unit for an enrolled node passes enrollment flags:\n%s", unit)
	}
}

func TestInstallServicePrintWritesTheUnitAndNoFiles(t *testing.T) {
	skipUnlessLinux(t)
	state := filepath.Join(t.TempDir(), "state")
	token := newJoinToken(t)
	const unitPath = "/etc/systemd/system/mcpmesh.service"
	_, before := os.Stat(unitPath)
	stdout, stderr, code := runMain(t, "install-service", "--print", "--state", state,
		"--coordinator", "https://10.0.0.1:7443", "--token", token, "--binary", "/usr/local/bin/mcpmesh")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(stdout, "# mcpmesh.service") || !strings.Contains(stdout, "\n[Service]\n") {
		t.Errorf("stdout is not the unit:\n%s", stdout)
	}
	if strings.Contains(stdout, token) {
		t.Error("the printed unit holds the join token")
	}
	if !strings.Contains(stdout, "--token-file "+state+"/join-token") {
		t.Errorf("the printed unit does not point at the token file:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Dir(state)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--print created %s (%v)", state, err)
	}
	if _, after := os.Stat(unitPath); (before == nil) != (after == nil) {
		t.Errorf("--print changed %s (before: %v, after: %v)", unitPath, before, after)
	}
}

// Flags after -- reach the service's `up` as given, checked now rather
// than at the service's next start.
func TestInstallServicePassesUpFlagsOn(t *testing.T) {
	skipUnlessLinux(t)
	stdout, stderr, code := runMain(t, "install-service", "--print", "--state", "/var/lib/mcpmesh", "--tun=false",
		"--binary", "/usr/local/bin/mcpmesh", "--", "--audit-fsync", "0", "--listen-port", "41641", "--firewall=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "ExecStart=/usr/local/bin/mcpmesh up --state /var/lib/mcpmesh --audit-fsync 0 --listen-port 41641 --firewall=false\n") {
		t.Errorf("the unit does not run up with the flags after --:\n%s", stdout)
	}
}

func TestInstallServiceUsageErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"token without coordinator": {"--print", "--token", "x"},
		"malformed token":           {"--print", "--coordinator", "https://h:1", "--token", "not-a-token"},
		"relative state":            {"--print", "--state", "state"},
		"relative binary":           {"--print", "--binary", "bin/mcpmesh"},
		"remove with a token":       {"--remove", "--root", "/nonexistent", "--token", "x"},
		"print and root":            {"--print", "--root", "/tmp"},
		"positional argument":       {"--print", "extra"},
		"unknown up flag":           {"--print", "--", "--bogus"},
		"up flag it sets itself":    {"--print", "--", "--state", "/srv/mcpmesh"},
		"negative audit fsync":      {"--print", "--", "--audit-fsync", "-1s"},
		"bad log level":             {"--print", "--", "--log-level", "loud"},
		"argument after --":         {"--print", "--", "extra"},
		"remove with up flags":      {"--remove", "--root", "/nonexistent", "--", "--audit-fsync", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runMain(t, append([]string{"install-service"}, args...)...)
			if code != 2 || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want a usage error", code, stdout, stderr)
			}
		})
	}
}

func TestInstallServiceChecksTUNAndRootPerSystem(t *testing.T) {
	o := installOptions{state: "/var/lib/mcpmesh", tun: true}
	var ue usageError
	if err := o.check("darwin", 0); !errors.As(err, &ue) {
		t.Errorf("--tun on darwin: %v, want a usage error", err)
	}
	if err := o.check("linux", 0); err != nil {
		t.Errorf("--tun on linux as root: %v", err)
	}
	if err := o.check("linux", 1000); err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("install as a user: %v, want an error asking for root", err)
	}
	o.print = true
	if err := o.check("linux", 1000); err != nil {
		t.Errorf("--print as a user: %v", err)
	}
	o.print, o.root = false, "/tmp/pkg"
	if err := o.check("linux", 1000); err != nil {
		t.Errorf("--root as a user: %v", err)
	}
}

func TestServiceForEachSystem(t *testing.T) {
	for goos, wantPath := range map[string]string{
		"linux":  "/etc/systemd/system/mcpmesh.service",
		"darwin": "/Library/LaunchDaemons/dev.mcpmesh.node.plist",
	} {
		k, err := serviceFor(goos)
		if err != nil || k.path != wantPath {
			t.Errorf("serviceFor(%s) = %q, %v; want %s", goos, k.path, err, wantPath)
		}
	}
	k, _ := serviceFor("darwin")
	if got, want := k.commandLine(k.start), "launchctl bootstrap system /Library/LaunchDaemons/dev.mcpmesh.node.plist"; got != want {
		t.Errorf("darwin start = %q, want %q", got, want)
	}
	k, _ = serviceFor("linux")
	if got, want := k.commandLine(k.start), "systemctl daemon-reload && systemctl enable --now mcpmesh.service"; got != want {
		t.Errorf("linux start = %q, want %q", got, want)
	}
	if _, err := serviceFor("windows"); err == nil {
		t.Error("serviceFor(windows) did not fail")
	}
}
