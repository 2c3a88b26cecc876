package platform

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func tunSpec() ServiceSpec {
	return ServiceSpec{
		Binary:   "/usr/local/bin/mcpmesh",
		Args:     []string{"up", "--tun", "--state", "/var/lib/mcpmesh", "--coordinator", "https://10.0.0.1:7443", "--token-file", "/var/lib/mcpmesh/join-token"},
		StateDir: "/var/lib/mcpmesh",
		TUN:      true,
	}
}

// unitLines returns the unit's directive lines, without comments and blanks.
func unitLines(unit string) []string {
	var out []string
	for l := range strings.SplitSeq(unit, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestSystemdUnitHasEveryHardeningDirective(t *testing.T) {
	unit, err := SystemdUnit(tunSpec())
	if err != nil {
		t.Fatal(err)
	}
	lines := unitLines(unit)
	for _, want := range []string{
		"[Unit]", "Description=mcpmesh node daemon (WireGuard mesh for MCP servers)",
		"Documentation=https://github.com/mcpmesh/mcpmesh",
		"After=network-online.target", "Wants=network-online.target",
		"[Service]", "Type=simple",
		"ExecStart=/usr/local/bin/mcpmesh up --tun --state /var/lib/mcpmesh --coordinator https://10.0.0.1:7443 --token-file /var/lib/mcpmesh/join-token",
		"Restart=on-failure", "RestartSec=2s",
		"StateDirectory=mcpmesh", "StateDirectoryMode=0700",
		"NoNewPrivileges=yes",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
		"ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
		"ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
		"ProtectClock=yes", "ProtectHostname=yes",
		"RestrictSUIDSGID=yes", "RestrictRealtime=yes", "RestrictNamespaces=yes",
		"LockPersonality=yes", "SystemCallArchitectures=native",
		"SystemCallFilter=@system-service",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"DevicePolicy=closed", "DeviceAllow=/dev/net/tun rw",
		"UMask=0077",
		"[Install]", "WantedBy=multi-user.target",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "MemoryDenyWriteExecute") {
			t.Errorf("unit sets %q, which breaks the JIT of Node.js MCP servers", l)
		}
	}
	if !strings.Contains(unit, "# MemoryDenyWriteExecute= is deliberately not set") {
		t.Error("unit does not explain why MemoryDenyWriteExecute is absent")
	}
	verifyUnit(t, tunSpec())
}

func TestSystemdUnitInUserspaceModeHasNoCapabilitiesAndNoTUN(t *testing.T) {
	s := tunSpec()
	s.TUN = false
	s.Args = slices.DeleteFunc(s.Args, func(a string) bool { return a == "--tun" })
	unit, err := SystemdUnit(s)
	if err != nil {
		t.Fatal(err)
	}
	lines := unitLines(unit)
	for _, want := range []string{"CapabilityBoundingSet=", "AmbientCapabilities=", "DevicePolicy=closed"} {
		if !slices.Contains(lines, want) {
			t.Errorf("userspace unit lacks %q", want)
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "CAP_") || strings.Contains(l, "/dev/net/tun") {
			t.Errorf("userspace unit grants %q", l)
		}
	}
	verifyUnit(t, s)
}

func TestSystemdUnitQuotesExecStartArguments(t *testing.T) {
	s := tunSpec()
	s.Binary = "/opt/mcp mesh/mcpmesh"
	s.Args = []string{"up", "--hostname", `a b%c$d"e\f`, "", "it's", ";", "tab\there"}
	unit, err := SystemdUnit(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `ExecStart="/opt/mcp mesh/mcpmesh" up --hostname "a b%%c$$d\"e\\f" "" "it's" ";" "tab\x09here"`
	var got string
	for _, l := range unitLines(unit) {
		if strings.HasPrefix(l, "ExecStart=") {
			got = l
		}
	}
	if got != want {
		t.Errorf("ExecStart line\n got %s\nwant %s", got, want)
	}
	verifyUnit(t, s)
}

func TestSystemdUnitOutsideVarLibUsesReadWritePaths(t *testing.T) {
	s := tunSpec()
	s.StateDir = "/srv/mcpmesh"
	unit, err := SystemdUnit(s)
	if err != nil {
		t.Fatal(err)
	}
	lines := unitLines(unit)
	if !slices.Contains(lines, "ReadWritePaths=/srv/mcpmesh") {
		t.Error("unit does not make /srv/mcpmesh writable")
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "StateDirectory") {
			t.Errorf("unit has %q for a state directory outside /var/lib", l)
		}
	}
	verifyUnit(t, s)
}

func TestServiceDefinitionsRefuseWhatTheyCannotRepresent(t *testing.T) {
	for name, mutate := range map[string]func(*ServiceSpec){
		"relative binary":           func(s *ServiceSpec) { s.Binary = "bin/mcpmesh" },
		"newline in argument":       func(s *ServiceSpec) { s.Args = append(s.Args, "--hostname", "a\nExecStartPre=/bin/sh") },
		"NUL in argument":           func(s *ServiceSpec) { s.Args = append(s.Args, "a\x00b") },
		"newline in binary":         func(s *ServiceSpec) { s.Binary = "/usr/bin/mcp\nmesh" },
		"invalid UTF-8 in argument": func(s *ServiceSpec) { s.Args = append(s.Args, "\xff") },
	} {
		t.Run(name, func(t *testing.T) {
			s := tunSpec()
			s.TUN = false
			mutate(&s)
			if u, err := SystemdUnit(s); err == nil {
				t.Errorf("SystemdUnit accepted it:\n%s", u)
			}
			if p, err := LaunchdPlist(s); err == nil {
				t.Errorf("LaunchdPlist accepted it:\n%s", p)
			}
		})
	}
	t.Run("newline error is errBadChar", func(t *testing.T) {
		s := tunSpec()
		s.Args = append(s.Args, "x\n")
		if _, err := SystemdUnit(s); !errors.Is(err, errBadChar) {
			t.Errorf("err = %v, want errBadChar", err)
		}
	})
	t.Run("relative or unusual state directory", func(t *testing.T) {
		for _, dir := range []string{"", "var/lib/mcpmesh", "/var/lib/../mcpmesh", "/srv/my state"} {
			s := tunSpec()
			s.StateDir = dir
			if _, err := SystemdUnit(s); err == nil {
				t.Errorf("SystemdUnit accepted state directory %q", dir)
			}
		}
	})
	t.Run("TUN on launchd", func(t *testing.T) {
		if _, err := LaunchdPlist(tunSpec()); err == nil {
			t.Error("LaunchdPlist accepted kernel TUN mode")
		}
	})
	t.Run("XML control character", func(t *testing.T) {
		s := tunSpec()
		s.TUN = false
		s.Args = append(s.Args, "bell\x07")
		if _, err := LaunchdPlist(s); err == nil {
			t.Error("LaunchdPlist accepted a character XML cannot carry")
		}
	})
}

// plist is the part of a launchd property list the node's plist uses.
type plist struct {
	Label             string
	ProgramArguments  []string
	RunAtLoad         bool
	RestartOnFailure  bool // KeepAlive { SuccessfulExit = false }
	StandardOutPath   string
	StandardErrorPath string
}

// parsePlist decodes a flat <dict> of strings, booleans and string arrays
// with encoding/xml, as launchd would read it.
func parsePlist(t *testing.T, doc string) plist {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	var (
		p              plist
		key, text      string
		inArray, dicts = false, 0
		values         = map[string]string{}
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plist is not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			text = ""
			switch tok.Name.Local {
			case "dict":
				dicts++
			case "array":
				inArray = true
			case "true", "false":
				values[key] = tok.Name.Local
			}
		case xml.CharData:
			text += string(tok)
		case xml.EndElement:
			switch tok.Name.Local {
			case "key":
				key = text
			case "string":
				if inArray && key == "ProgramArguments" {
					p.ProgramArguments = append(p.ProgramArguments, text)
				} else {
					values[key] = text
				}
			case "array":
				inArray = false
			}
		}
	}
	if dicts != 2 {
		t.Fatalf("plist has %d dicts, want 2 (the job and its KeepAlive)", dicts)
	}
	p.Label = values["Label"]
	p.RunAtLoad = values["RunAtLoad"] == "true"
	p.RestartOnFailure = values["SuccessfulExit"] == "false"
	p.StandardOutPath = values["StandardOutPath"]
	p.StandardErrorPath = values["StandardErrorPath"]
	return p
}

func TestLaunchdPlistParsesAndRoundTripsProgramArguments(t *testing.T) {
	s := ServiceSpec{
		Binary:   "/Applications/mcp mesh/mcpmesh",
		Args:     []string{"up", "--state", "/Library/Application Support/mcpmesh", "--hostname", `<a&b>"c'd%e$f\g`, "", "tab\tcr\r]]>"},
		StateDir: "/Library/Application Support/mcpmesh",
	}
	doc, err := LaunchdPlist(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(doc, "<a&b>") {
		t.Error("plist holds the argument unescaped")
	}
	if !strings.Contains(doc, "&lt;a&amp;b&gt;") {
		t.Error("plist does not escape < and & in the argument")
	}
	got := parsePlist(t, doc)
	want := plist{
		Label:             "dev.mcpmesh.node",
		ProgramArguments:  append([]string{s.Binary}, s.Args...),
		RunAtLoad:         true,
		RestartOnFailure:  true,
		StandardOutPath:   "/var/log/mcpmesh.log",
		StandardErrorPath: "/var/log/mcpmesh.log",
	}
	if !slices.Equal(got.ProgramArguments, want.ProgramArguments) {
		t.Errorf("ProgramArguments\n got %q\nwant %q", got.ProgramArguments, want.ProgramArguments)
	}
	got.ProgramArguments, want.ProgramArguments = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plist = %+v, want %+v", got, want)
	}
	if plutil, err := exec.LookPath("plutil"); err == nil {
		f := filepath.Join(t.TempDir(), "dev.mcpmesh.node.plist")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(plutil, "-lint", f).CombinedOutput(); err != nil {
			t.Errorf("plutil -lint: %v\n%s", err, out)
		}
	}
}

// verifyUnit runs `systemd-analyze verify` on the unit for s when the
// tool is installed, so systemd's own parser judges the syntax and the
// quoting. The binary is swapped for an executable that exists (with a
// space in its path), since verify also checks that.
func verifyUnit(t *testing.T, s ServiceSpec) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed; not verifying the unit with systemd")
		return
	}
	dir := t.TempDir()
	s.Binary = filepath.Join(dir, "mcp mesh")
	if err := os.WriteFile(s.Binary, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := SystemdUnit(s)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, SystemdUnitName)
	if err := os.WriteFile(f, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", f).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
