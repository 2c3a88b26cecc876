package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/platform"
)

// joinTokenFile is the file in the state directory that hands the join
// token to the service, so the secret never appears in the unit (which is
// world-readable) or in the daemon's command line (visible in ps).
const joinTokenFile = "join-token"

// installOptions are the flags of `mcpmesh install-service`.
type installOptions struct {
	coordinator, token, hostname string
	state, binary, root          string
	tun, print, noStart, remove  bool
	// up are the service's other `up` flags, given after --.
	up []string
}

// serviceKind is how one operating system's service manager takes the
// node: where its definition goes, how it is rendered, and the commands
// that start and stop it.
type serviceKind struct {
	manager string // the service manager's tool: systemctl or launchctl
	path    string // the definition's path on the target system
	render  func(platform.ServiceSpec) (string, error)
	start   []step // after a first install
	restart []step // after replacing a definition already installed
	stop    []step // before the definition is deleted
	cleanup []step // after it is deleted
}

// step is one run of the service manager's tool.
type step struct {
	args []string
	// mayFail marks steps whose failure only means there was nothing to
	// undo, such as stopping a job that is not loaded.
	mayFail bool
}

func (k serviceKind) commandLine(steps []step) string {
	var s []string
	for _, st := range steps {
		s = append(s, k.manager+" "+strings.Join(st.args, " "))
	}
	return strings.Join(s, " && ")
}

// serviceFor returns how goos runs services, with definitions rendered
// for the node; other systems get an error that says what to do instead.
func serviceFor(goos string) (serviceKind, error) {
	switch goos {
	case "linux":
		unit := platform.SystemdUnitName
		return serviceKind{
			manager: "systemctl",
			path:    "/etc/systemd/system/" + unit,
			render:  platform.SystemdUnit,
			start:   []step{{args: []string{"daemon-reload"}}, {args: []string{"enable", "--now", unit}}},
			// enable --now leaves a running node on its old command line.
			restart: []step{{args: []string{"daemon-reload"}}, {args: []string{"enable", unit}}, {args: []string{"restart", unit}}},
			stop:    []step{{args: []string{"disable", "--now", unit}, mayFail: true}},
			cleanup: []step{{args: []string{"daemon-reload"}}},
		}, nil
	case "darwin":
		plist := "/Library/LaunchDaemons/" + platform.LaunchdLabel + ".plist"
		job := "system/" + platform.LaunchdLabel
		return serviceKind{
			manager: "launchctl",
			path:    plist,
			render:  platform.LaunchdPlist,
			start:   []step{{args: []string{"bootstrap", "system", plist}}},
			restart: []step{{args: []string{"bootout", job}, mayFail: true}, {args: []string{"bootstrap", "system", plist}}},
			stop:    []step{{args: []string{"bootout", job}, mayFail: true}},
		}, nil
	}
	return serviceKind{}, fmt.Errorf("install-service knows systemd (Linux) and launchd (macOS), not %s; run `mcpmesh up --state DIR` from your own service manager", goos)
}

// defaultServiceState is where a system service keeps the node's state.
func defaultServiceState(goos string) string {
	if goos == "darwin" {
		return "/Library/Application Support/mcpmesh"
	}
	return "/var/lib/mcpmesh"
}

// check rejects flag combinations that cannot work on goos for a user
// with euid, before anything is read or written.
func (o installOptions) check(goos string, euid int) error {
	if o.tun && goos != "linux" {
		return usageError{"--tun: kernel TUN mode is only available on Linux; " + goos + " runs the node in userspace mode"}
	}
	if o.remove {
		if o.print || o.noStart || o.token != "" || o.coordinator != "" || o.hostname != "" || o.binary != "" || len(o.up) > 0 {
			return usageError{"--remove takes only --state and --root"}
		}
	} else if o.token != "" && o.coordinator == "" {
		return usageError{"--token needs --coordinator URL: enrollment needs both"}
	}
	if !path.IsAbs(o.state) {
		return usageError{fmt.Sprintf("--state %q: the service needs an absolute path", o.state)}
	}
	if o.binary != "" && !path.IsAbs(o.binary) {
		return usageError{fmt.Sprintf("--binary %q: the service needs an absolute path", o.binary)}
	}
	if o.print && o.root != "" {
		return usageError{"--print writes nothing, so --root has no use with it"}
	}
	if !o.print && o.root == "" && euid != 0 {
		return errors.New("writing and starting a system service needs root: run it with sudo, or pass --print to see the definition or --root DIR to write it under DIR")
	}
	return nil
}

// args is the node's command line in the service, after the binary.
func (o installOptions) args() []string {
	a := []string{"up"}
	if o.tun {
		a = append(a, "--tun")
	}
	a = append(a, "--state", o.state)
	if o.coordinator != "" {
		a = append(a, "--coordinator", o.coordinator)
	}
	if o.hostname != "" {
		a = append(a, "--hostname", o.hostname)
	}
	if o.token != "" {
		a = append(a, "--token-file", path.Join(o.state, joinTokenFile))
	}
	return append(a, o.up...)
}

// ownUpFlags are the flags of `up` that install-service sets itself.
var ownUpFlags = map[string]bool{"state": true, "tun": true, "coordinator": true, "hostname": true, "token": true, "token-file": true}

// checkUpArgs checks the flags given after -- as `mcpmesh up` would at
// the service's start, so that a mistake shows now rather than in the
// service's log at the next boot.
func checkUpArgs(e *env, args []string) error {
	fs := newFlags(e, "up")
	o := upFlags(e, fs)
	pos, err := parse(fs, args, 0, -1)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Sprintf("%q after --: only flags of `mcpmesh up` go there", pos[0])}
	}
	var own []string
	fs.Visit(func(f *flag.Flag) {
		if ownUpFlags[f.Name] {
			own = append(own, "--"+f.Name)
		}
	})
	if len(own) > 0 {
		return usageError{fmt.Sprintf("%s after --: give it to install-service itself, which sets it in the service", strings.Join(own, ", "))}
	}
	return o.check()
}

// under places an absolute path of the target system under root.
func under(root, p string) string {
	if root == "" {
		return p
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

func runInstallService(ctx context.Context, e *env, args []string) error {
	goos := runtime.GOOS
	var o installOptions
	flags := newFlags(e, "install-service")
	flags.StringVar(&o.coordinator, "coordinator", "", "coordinator URL for the first enrollment")
	flags.StringVar(&o.token, "token", "", "join token for the first enrollment; stored in STATE/"+joinTokenFile+" (0600), never in the unit")
	flags.StringVar(&o.hostname, "hostname", "", "node name (default: this host's name)")
	flags.StringVar(&o.state, "state", defaultServiceState(goos), "the node's state directory")
	flags.BoolVar(&o.tun, "tun", goos == "linux", "kernel TUN mode (Linux only; --tun=false for userspace mode)")
	flags.StringVar(&o.binary, "binary", "", "absolute path of the mcpmesh binary the service runs (default: this one)")
	flags.BoolVar(&o.print, "print", false, "write the service definition to stdout and touch nothing")
	flags.StringVar(&o.root, "root", "", "write files under `DIR` instead of / (packaging); starts nothing")
	flags.BoolVar(&o.noStart, "no-start", false, "write the files but do not enable or start the service")
	flags.BoolVar(&o.remove, "remove", false, "stop, disable and delete the service (the node's state is kept)")
	flags.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: mcpmesh install-service [flags] [-- up flags]\n\nFlags after -- go to the service's `mcpmesh up` (see `mcpmesh up -h`), e.g.\n  mcpmesh install-service --coordinator URL --token T -- --audit-fsync 0 --listen-port 41641\n\n")
		flags.PrintDefaults()
	}
	if i := slices.Index(args, "--"); i >= 0 {
		args, o.up = args[:i], args[i+1:]
	}
	if _, err := parse(flags, args, 0, 0); err != nil {
		return err
	}
	if err := checkUpArgs(e, o.up); err != nil {
		return err
	}
	o.token = strings.TrimSpace(o.token)
	if err := o.check(goos, os.Geteuid()); err != nil {
		return err
	}
	kind, err := serviceFor(goos)
	if err != nil {
		return err
	}
	if o.remove {
		return removeService(ctx, e, kind, o)
	}
	if o.token != "" {
		if _, err := identity.ParseToken(o.token); err != nil {
			return usageError{fmt.Sprintf("--token: %v", err)}
		}
	}
	if o.binary == "" {
		if o.binary, err = thisBinary(); err != nil {
			return err
		}
	}
	def, err := kind.render(platform.ServiceSpec{Binary: o.binary, Args: o.args(), StateDir: o.state, TUN: o.tun})
	if err != nil {
		return err
	}
	if o.root == "" && strings.HasPrefix(o.binary, os.TempDir()+string(filepath.Separator)) {
		fmt.Fprintf(e.stderr, "warning: %s is in a temporary directory the service cannot see (PrivateTmp) and that may be cleaned; pass --binary with an installed copy\n", o.binary)
	}
	if o.print {
		if o.token != "" {
			fmt.Fprintf(e.stderr, "note: --print wrote no token; put it in %s (mode 0600) before starting the service\n", path.Join(o.state, joinTokenFile))
		}
		_, err := fmt.Fprint(e.stdout, def)
		return err
	}
	return installService(ctx, e, kind, o, def)
}

// thisBinary is the running mcpmesh with symlinks resolved, so the
// service keeps working when a package manager repoints the link.
func thisBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this binary (pass --binary): %w", err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("find this binary (pass --binary): %w", err)
	}
	return exe, nil
}

func installService(ctx context.Context, e *env, kind serviceKind, o installOptions, def string) error {
	state := under(o.root, o.state)
	if o.token == "" {
		// Without a token the node can only start if it enrolled before;
		// node.json is the node package's record of that enrollment.
		_, err := os.Stat(filepath.Join(state, "node.json"))
		if errors.Is(err, fs.ErrNotExist) {
			return usageError{fmt.Sprintf("%s holds no enrolled node: pass --coordinator URL and --token TOKEN (from `mcpmesh token create`) for the first enrollment", state)}
		}
		if err != nil {
			return fmt.Errorf("check for an enrolled node: %w", err)
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
			return fmt.Errorf("create the state directory: %w", err)
		}
		if err := os.Mkdir(state, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create the state directory: %w", err)
		}
		tokenPath := filepath.Join(state, joinTokenFile)
		if err := identity.WriteFileAtomic(tokenPath, []byte(o.token+"\n"), 0o600); err != nil {
			return fmt.Errorf("store the join token: %w", err)
		}
		fmt.Fprintf(e.stderr, "wrote the join token to %s (mode 0600)\n", tokenPath)
	}

	defPath := under(o.root, kind.path)
	_, err := os.Stat(defPath)
	replacing := err == nil
	if err := os.MkdirAll(filepath.Dir(defPath), 0o755); err != nil {
		return fmt.Errorf("create the service directory: %w", err)
	}
	if err := identity.WriteFileAtomic(defPath, []byte(def), 0o644); err != nil {
		return fmt.Errorf("write the service definition: %w", err)
	}
	fmt.Fprintf(e.stderr, "wrote %s\n", defPath)

	steps := kind.start
	if replacing {
		steps = kind.restart
	}
	switch {
	case o.root != "":
		fmt.Fprintf(e.stderr, "nothing started (--root); on the target system run: %s\n", kind.commandLine(kind.start))
		return nil
	case o.noStart:
		fmt.Fprintf(e.stderr, "nothing started (--no-start); start it with: %s\n", kind.commandLine(steps))
		return nil
	}
	if _, err := exec.LookPath(kind.manager); err != nil {
		fmt.Fprintf(e.stderr, "%s is not on PATH, so nothing was started; on a host with %s, start it with: %s\n", kind.manager, kind.manager, kind.commandLine(steps))
		return nil
	}
	if err := runSteps(ctx, e, kind.manager, steps); err != nil {
		return fmt.Errorf("%w; %s is written, fix the cause and run: %s", err, defPath, kind.commandLine(steps))
	}
	if kind.manager == "systemctl" {
		fmt.Fprintf(e.stderr, "the node runs now and at boot; see `systemctl status %s`, `journalctl -u %s` and `mcpmesh status --state %s`\n",
			platform.SystemdUnitName, platform.SystemdUnitName, o.state)
	} else {
		fmt.Fprintf(e.stderr, "the node runs now and at boot; its log is %s; see `mcpmesh status --state %q`\n", platform.LaunchdLogPath, o.state)
	}
	return nil
}

func removeService(ctx context.Context, e *env, kind serviceKind, o installOptions) error {
	defPath := under(o.root, kind.path)
	_, err := os.Stat(defPath)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(e.stderr, "no service at %s; nothing to remove\n", defPath)
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove the service: %w", err)
	}
	live := o.root == ""
	if live {
		if _, err := exec.LookPath(kind.manager); err != nil {
			live = false
			fmt.Fprintf(e.stderr, "%s is not on PATH; deleting the files only\n", kind.manager)
		}
	}
	if live {
		if err := runSteps(ctx, e, kind.manager, kind.stop); err != nil {
			return err
		}
	}
	if err := os.Remove(defPath); err != nil {
		return fmt.Errorf("remove the service: %w", err)
	}
	fmt.Fprintf(e.stderr, "removed %s\n", defPath)
	// A join token left behind is a secret with no further use.
	tokenPath := filepath.Join(under(o.root, o.state), joinTokenFile)
	if err := os.Remove(tokenPath); err == nil {
		fmt.Fprintf(e.stderr, "removed %s\n", tokenPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the join token: %w", err)
	}
	if live {
		if err := runSteps(ctx, e, kind.manager, kind.cleanup); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stderr, "the node's identity in %s is kept; to leave the mesh for good, revoke it (`mcpmesh nodes revoke NAME`) and delete that directory\n", o.state)
	return nil
}

// runSteps runs the service manager's commands in order, their output
// going to stderr, as stdout belongs to --print.
func runSteps(ctx context.Context, e *env, tool string, steps []step) error {
	for _, st := range steps {
		cmd := exec.CommandContext(ctx, tool, st.args...)
		cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
		if err := cmd.Run(); err != nil {
			if st.mayFail {
				fmt.Fprintf(e.stderr, "note: %s %s: %v (continuing)\n", tool, strings.Join(st.args, " "), err)
				continue
			}
			return fmt.Errorf("%s %s: %w", tool, strings.Join(st.args, " "), err)
		}
	}
	return nil
}
