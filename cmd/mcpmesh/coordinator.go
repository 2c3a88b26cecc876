package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
)

func runCoordinator(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"want a subcommand: init or run"}
	}
	switch args[0] {
	case "init":
		return coordinatorInit(e, args[1:])
	case "run":
		return coordinatorRun(ctx, e, args[1:])
	}
	return usageError{fmt.Sprintf("unknown subcommand %q; want init or run", args[0])}
}

func coordinatorInit(e *env, args []string) error {
	fs := newFlags(e, "coordinator init")
	data := fs.String("data", "", "data directory to create (CA, netmap key, admin credential, store)")
	td := fs.String("trust-domain", "", "SPIFFE trust domain, e.g. acme.internal")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *data == "" || *td == "" {
		return usageError{"--data and --trust-domain are required"}
	}
	if err := coordinator.Init(*data, *td, time.Now()); err != nil {
		return err
	}
	admin, err := filepath.Abs(filepath.Join(*data, coordinator.FileAdmin))
	if err != nil {
		return err
	}
	saveAdminContext(e, func(c *adminContext) { c.Admin = admin })
	fmt.Fprintf(e.stderr, "coordinator for spiffe://%s initialised in %s\nadmin credential: %s (keep it secret)\nnext: mcpmesh coordinator run --data %s --listen 127.0.0.1:7443\n", *td, *data, admin, *data)
	return nil
}

// minMaxConns is the least --max-conns takes: a coordinator that can hold
// only a connection or two is a typo, not a deployment.
const minMaxConns = 16

func coordinatorRun(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "coordinator run")
	data := fs.String("data", "", "data directory written by `coordinator init`")
	listen := fs.String("listen", "127.0.0.1:7443", "address for the control API (HTTPS)")
	svidTTL := fs.Duration("svid-ttl", coordinator.DefaultSVIDTTL, "lifetime of node SVIDs; nodes renew at half-life")
	netmapTTL := fs.Duration("netmap-ttl", coordinator.DefaultNetmapTTL, "how long a node that cannot reach the coordinator keeps its peers and policy")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	readHeader := fs.Duration("read-header-timeout", coordinator.DefaultReadHeaderTimeout, "time a connection has for its TLS handshake and a request's headers")
	bodyRead := fs.Duration("body-read-timeout", coordinator.DefaultBodyReadTimeout, "time a request has to send its body, once its headers are in")
	idle := fs.Duration("idle-timeout", coordinator.DefaultIdleTimeout, "close a kept-alive connection that carries no request for this long")
	maxConns := fs.Int("max-conns", coordinator.DefaultMaxConns, "connections held open at once (a node holds up to two); more wait in the listen backlog")
	var retention days
	fs.Var(&retention, "audit-retention", "delete audit events received longer than `age` ago, e.g. 400d or 9600h (default: keep every event)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *data == "" {
		return usageError{"--data is required"}
	}
	if retention != 0 && time.Duration(retention) < 24*time.Hour {
		return usageError{fmt.Sprintf("--audit-retention %s is too short: at least 1d, so that a trail is never emptied by a slip of the keyboard", time.Duration(retention))}
	}
	if *svidTTL < time.Minute {
		return usageError{fmt.Sprintf("--svid-ttl %s is too short: at least 1m, since nodes renew at half-life", *svidTTL)}
	}
	if *netmapTTL < 10*time.Minute {
		return usageError{fmt.Sprintf("--netmap-ttl %s is too short: at least 10m, or a brief coordinator restart, or a node's clock a few minutes off, would cut nodes off their peers", *netmapTTL)}
	}
	for _, t := range []struct {
		flag string
		d    time.Duration
	}{{"read-header-timeout", *readHeader}, {"body-read-timeout", *bodyRead}, {"idle-timeout", *idle}} {
		if t.d < time.Second {
			return usageError{fmt.Sprintf("--%s %s is too short: at least 1s, or nodes on a slow link could not finish a request", t.flag, t.d)}
		}
	}
	if *maxConns < minMaxConns {
		return usageError{fmt.Sprintf("--max-conns %d is too small: at least %d (a node holds up to two connections)", *maxConns, minMaxConns)}
	}
	log, err := newLogger(e, *logLevel)
	if err != nil {
		return err
	}
	srv, err := coordinator.Open(ctx, *data, coordinator.Config{Logger: log, SVIDTTL: *svidTTL, NetmapTTL: *netmapTTL, AuditRetention: time.Duration(retention),
		ReadHeaderTimeout: *readHeader, BodyReadTimeout: *bodyRead, IdleTimeout: *idle, MaxConns: *maxConns})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	url := "https://" + announceAddr(ln.Addr())
	admin, _ := filepath.Abs(filepath.Join(*data, coordinator.FileAdmin))
	saveAdminContext(e, func(c *adminContext) { c.Coordinator, c.Admin = url, admin })
	log.Info("coordinator listening", "url", url, "trust_domain", srv.TrustDomain().Name(), "ca", srv.CAFingerprint().String())
	return srv.Serve(ctx, ln)
}

// announceAddr turns a wildcard listen address into one a local client can dial.
func announceAddr(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String()
	}
	return ap.String()
}

func newLogger(e *env, level string) (*slog.Logger, error) {
	l, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: l})), nil
}

// parseLevel reads a --log-level value.
func parseLevel(level string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return 0, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return l, nil
}

// days is a duration flag that also takes whole days ("400d"), the unit a
// retention is written in.
type days time.Duration

func (d *days) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	if v := time.Duration(*d); v%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", v/(24*time.Hour))
	}
	return time.Duration(*d).String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil || v > 100*365 {
			return fmt.Errorf("%q: want whole days, such as 400d, up to 36500d", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a duration such as 400d or 9600h", s)
	}
	*d = days(v)
	return nil
}
