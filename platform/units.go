package platform

import (
	"encoding/xml"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// Names a service manager knows the node by. They are exported so the
// command that installs, starts and removes the service uses the same
// names the rendered definitions declare.
const (
	// SystemdUnitName is the name of the systemd unit, and so of the file
	// in /etc/systemd/system.
	SystemdUnitName = "mcpmesh.service"
	// LaunchdLabel is the launchd job label; the plist is named after it.
	LaunchdLabel = "dev.mcpmesh.node"
	// LaunchdLogPath is where launchd sends the node's output, as macOS has
	// no journal that would collect it otherwise.
	LaunchdLogPath = "/var/log/mcpmesh.log"
)

// systemdStateRoot is where systemd's StateDirectory= puts state
// directories for system services.
const systemdStateRoot = "/var/lib/"

// ServiceSpec is what a service unit runs. It is the whole input of
// SystemdUnit and LaunchdPlist, so the same node command line renders
// the same way for either service manager.
type ServiceSpec struct {
	Binary   string   // absolute path of the mcpmesh binary
	Args     []string // arguments after the binary, e.g. up --tun --state /var/lib/mcpmesh --coordinator URL --token-file FILE
	StateDir string   // the node's state directory, /var/lib/mcpmesh on Linux; the one path the unit may write
	TUN      bool     // kernel TUN mode: needs CAP_NET_ADMIN and /dev/net/tun
}

// check refuses what neither service manager can represent faithfully: a
// relative binary (service managers have no working directory to resolve
// it against) and strings with a newline or NUL, which would end a unit
// line or a C string early and so run something other than asked.
func (s ServiceSpec) check() error {
	if !path.IsAbs(s.Binary) {
		return fmt.Errorf("platform: service binary %q is not an absolute path", s.Binary)
	}
	if err := checkString("binary", s.Binary); err != nil {
		return err
	}
	for i, a := range s.Args {
		if err := checkString(fmt.Sprintf("argument %d", i+1), a); err != nil {
			return err
		}
	}
	return checkString("state directory", s.StateDir)
}

// errBadChar is why a string cannot go into a service definition.
var errBadChar = errors.New("contains a newline or NUL")

func checkString(what, s string) error {
	if strings.ContainsAny(s, "\n\x00") {
		return fmt.Errorf("platform: service %s %q: %w", what, s, errBadChar)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("platform: service %s %q: not valid UTF-8", what, s)
	}
	return nil
}

// SystemdUnit returns the text of a hardened systemd unit (mcpmesh.service)
// that runs s at boot. The unit may write only the state directory, keeps
// only the capabilities kernel TUN mode needs (none in userspace mode),
// and explains its non-obvious lines in comments, so an operator reading
// it on a host knows what each restriction is for before loosening it.
func SystemdUnit(s ServiceSpec) (string, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	state, err := systemdStateLines(s.StateDir)
	if err != nil {
		return "", err
	}
	words := make([]string, 0, 1+len(s.Args))
	words = append(words, systemdQuote(s.Binary))
	for _, a := range s.Args {
		words = append(words, systemdQuote(a))
	}

	var b strings.Builder
	line := func(l ...string) {
		for _, x := range l {
			b.WriteString(x)
			b.WriteByte('\n')
		}
	}
	line(
		"# "+SystemdUnitName+": the mcpmesh node daemon, written by `mcpmesh install-service`.",
		"# Run that command again to change it rather than editing this file.",
		"[Unit]",
		"Description=mcpmesh node daemon (WireGuard mesh for MCP servers)",
		"Documentation=https://github.com/mcpmesh/mcpmesh",
		"# The node reaches its coordinator and peers over the network, so it",
		"# starts once the network is up rather than failing its first attempts.",
		"After=network-online.target",
		"Wants=network-online.target",
		"",
		"[Service]",
		"Type=simple",
		"ExecStart="+strings.Join(words, " "),
		"# A clean exit (`mcpmesh down`) is meant; only failures are restarted.",
		"Restart=on-failure",
		"RestartSec=2s",
	)
	line(state...)
	line(
		"# What the node and the MCP servers it starts create is private to them.",
		"UMask=0077",
		"# Stdio MCP servers (npx ...) keep caches under HOME, and /root is",
		"# read-only here: give them the state directory.",
		"Environment="+systemdQuote("HOME="+s.StateDir),
		"",
		"# Hardening: the node runs as root (kernel TUN mode insists on it) but",
		"# everything below takes away what it does not need.",
		"NoNewPrivileges=yes",
	)
	if s.TUN {
		line(
			"# Kernel TUN mode creates mcpmesh0 and sets its addresses and routes",
			"# over netlink: CAP_NET_ADMIN and CAP_NET_RAW, and no other capability.",
			"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
			"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
		)
	} else {
		line(
			"# Userspace mode only sends and receives UDP: no capabilities at all.",
			"CapabilityBoundingSet=",
			"AmbientCapabilities=",
		)
	}
	line(
		"# The whole file system is read-only except the state directory.",
		"ProtectSystem=strict",
		"ProtectHome=read-only",
		"PrivateTmp=yes",
		"ProtectKernelModules=yes",
		"ProtectKernelLogs=yes",
		"ProtectControlGroups=yes",
		"ProtectClock=yes",
		"ProtectHostname=yes",
		"RestrictSUIDSGID=yes",
		"RestrictRealtime=yes",
		"RestrictNamespaces=yes",
		"LockPersonality=yes",
		"# MemoryDenyWriteExecute= is deliberately not set: the node starts stdio",
		"# MCP servers such as Node.js (npx) programs, whose JIT needs memory that",
		"# is writable and executable.",
		"SystemCallArchitectures=native",
		"SystemCallFilter=@system-service",
		"# AF_NETLINK: configuring mcpmesh0 and listing the host's addresses.",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"# Only the standard pseudo-devices (/dev/null, /dev/urandom, ...).",
		"DevicePolicy=closed",
	)
	if s.TUN {
		line(
			"# Kernel TUN mode opens the TUN clone device.",
			"DeviceAllow=/dev/net/tun rw",
		)
	}
	line(
		"",
		"[Install]",
		"WantedBy=multi-user.target",
	)
	return b.String(), nil
}

// systemdStateLines makes dir the unit's one writable path. Under
// /var/lib it is a StateDirectory=, which systemd creates with the given
// mode before the start and which survives ProtectSystem=strict;
// anywhere else it has to exist already and is opened with ReadWritePaths=.
func systemdStateLines(dir string) ([]string, error) {
	if !path.IsAbs(dir) || path.Clean(dir) != dir {
		return nil, fmt.Errorf("platform: state directory %q is not a clean absolute path", dir)
	}
	// These settings take paths with quoting rules of their own; a plain
	// path needs none, and state directories have no reason to be fancy.
	for _, r := range dir {
		if !plainPathRune(r) {
			return nil, fmt.Errorf("platform: state directory %q: a systemd unit needs a path of letters, digits and -_.+@:,= only", dir)
		}
	}
	if rel, ok := strings.CutPrefix(dir, systemdStateRoot); ok && rel != "" {
		return []string{
			"# State (keys, SVID, netmap, LocalAPI socket) lives in " + dir + ",",
			"# the only writable path; 0700 as it holds private keys.",
			"StateDirectory=" + rel,
			"StateDirectoryMode=0700",
		}, nil
	}
	return []string{
		"# State (keys, SVID, netmap, LocalAPI socket) lives in " + dir + ",",
		"# the only writable path; it must exist before the service starts.",
		"ReadWritePaths=" + dir,
	}, nil
}

func plainPathRune(r rune) bool {
	return r < utf8.RuneSelf && (plainRune(r) || r == '/')
}

// plainRune reports whether r needs no quoting in an ExecStart= word:
// systemd gives none of these a meaning anywhere in a word after the
// first, and the first word (the binary) always starts with "/".
func plainRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("-_./:=,+@", r)
}

// systemdQuote writes one ExecStart= word so that systemd hands it to the
// program unchanged. Plain words stay bare, for a unit people can read;
// anything else is double-quoted with C escapes, which systemd undoes
// when it splits the line. Inside or outside quotes systemd expands "%"
// specifiers when loading the unit and "$" variables when starting it, so
// both are doubled. Control characters become \xNN escapes; the caller
// has already refused newline and NUL.
func systemdQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !plainRune(r) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '%':
			b.WriteString("%%")
		case r == '$':
			b.WriteString("$$")
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// LaunchdPlist returns the launchd property list (a LaunchDaemon labelled
// dev.mcpmesh.node) that runs s at boot and keeps it running. macOS has
// no kernel TUN mode, so a spec asking for one is refused rather than
// rendered into a daemon that would fail at every start.
func LaunchdPlist(s ServiceSpec) (string, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	if s.TUN {
		return "", errors.New("platform: launchd: kernel TUN mode is Linux-only; macOS runs the node in userspace mode")
	}
	args := append([]string{s.Binary}, s.Args...)
	for i, a := range args {
		if err := checkXMLString(a); err != nil {
			return "", fmt.Errorf("platform: launchd: program argument %d %q: %w", i, a, err)
		}
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- The mcpmesh node daemon, written by ` + "`mcpmesh install-service`" + `.
     Run that command again to change it rather than editing this file. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + LaunchdLabel + `</string>
	<key>ProgramArguments</key>
	<array>
`)
	for _, a := range args {
		b.WriteString("\t\t<string>")
		_ = xml.EscapeText(&b, []byte(a)) // a strings.Builder never fails
		b.WriteString("</string>\n")
	}
	b.WriteString(`	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardOutPath</key>
	<string>` + LaunchdLogPath + `</string>
	<key>StandardErrorPath</key>
	<string>` + LaunchdLogPath + `</string>
</dict>
</plist>
`)
	return b.String(), nil
}

// checkXMLString refuses characters XML 1.0 cannot carry at all (most C0
// controls): xml.EscapeText would silently replace them, and launchd
// would then run an argument other than the one given.
func checkXMLString(s string) error {
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\r' || r == 0xFFFE || r == 0xFFFF {
			return fmt.Errorf("control character %U cannot be written in XML", r)
		}
	}
	return nil
}
