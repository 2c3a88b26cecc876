package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/kernel"
)

// upOptions are the flags of `mcpmesh up`.
type upOptions struct {
	coord, token, state, hostname, advertise, tokenFile, logLevel string
	port                                                          uint
	tun, firewall                                                 bool
	exposureEvery, auditFsync                                     time.Duration
}

// upFlags defines the flags of `mcpmesh up` on fs. install-service checks
// the options it passes on to the service's `up` with the same set, so a
// mistake is reported when the service is installed, not in its log at
// the next boot.
func upFlags(e *env, fs *flag.FlagSet) *upOptions {
	o := &upOptions{}
	fs.StringVar(&o.coord, "coordinator", "", "coordinator URL, e.g. https://10.0.0.1:7443 (first start)")
	fs.StringVar(&o.token, "token", "", "join token from `mcpmesh token create` (first start)")
	fs.StringVar(&o.state, "state", defaultStateDir(e), "state directory (keys, SVID, last netmap, LocalAPI socket)")
	fs.StringVar(&o.hostname, "hostname", "", "node name (default: this host's name)")
	fs.UintVar(&o.port, "listen-port", 0, "WireGuard UDP port (default: any free port)")
	fs.StringVar(&o.advertise, "advertise", "", "endpoint peers should use, ip:port (default: the address the coordinator sees)")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the join token from this file, and delete it once enrolled (for service units)")
	fs.BoolVar(&o.tun, "tun", false, "kernel TUN mode with a real interface (needs root)")
	fs.BoolVar(&o.firewall, "firewall", true, "in TUN mode, guard the mesh addresses with nftables rules (table inet mcpmesh) and allow serve --lockdown")
	fs.DurationVar(&o.exposureEvery, "exposure-scan", 15*time.Minute, "how often to scan this host for MCP servers reachable off the mesh and report them (0: never)")
	fs.DurationVar(&o.auditFsync, "audit-fsync", auditlog.DefaultSyncEvery, "how long an audit event, written before its call is forwarded, may wait for its fsync (0: hold every answer until its event is fsynced)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return o
}

// check rejects values that cannot work on any host.
func (o *upOptions) check() error {
	switch {
	case o.auditFsync < 0:
		return usageError{"--audit-fsync must be 0 or more"}
	case o.token != "" && o.tokenFile != "":
		return usageError{"give --token or --token-file, not both"}
	case o.port > 65535:
		return usageError{"--listen-port must be at most 65535"}
	case o.exposureEvery < 0:
		return usageError{"--exposure-scan must be 0 (never) or more"}
	}
	_, err := parseLevel(o.logLevel)
	return err
}

func runUp(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "up")
	o := upFlags(e, fs)
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	var newTunnel func(tunnel.Config, *slog.Logger) (tunnel.Tunnel, error) // nil: userspace
	if o.tun {
		switch {
		case runtime.GOOS != "linux":
			return errors.New("--tun: kernel TUN mode is only available on Linux; run without --tun for userspace mode")
		case os.Geteuid() != 0:
			return errors.New("--tun: kernel TUN mode needs root to create the mcpmesh0 interface; run with sudo, or without --tun for userspace mode")
		}
		newTunnel = func(c tunnel.Config, log *slog.Logger) (tunnel.Tunnel, error) {
			return kernel.New(c, kernel.WithLogger(log))
		}
	}
	var fw node.Firewall
	if o.tun && o.firewall {
		fw = platform.NewFirewall()
	}
	joinToken := o.token
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		switch {
		case err == nil:
			joinToken = string(b)
		case errors.Is(err, os.ErrNotExist):
			// Spent and deleted at the first enrollment: a service unit
			// keeps passing the flag.
		default:
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	log, err := newLogger(e, o.logLevel)
	if err != nil {
		return err
	}
	n, err := node.Start(ctx, node.Config{
		StateDir:          o.state,
		Coordinator:       o.coord,
		Token:             strings.TrimSpace(joinToken),
		Hostname:          o.hostname,
		ListenPort:        uint16(o.port),
		Advertise:         o.advertise,
		Logger:            log,
		NewTunnel:         newTunnel,
		Firewall:          fw,
		ExposureScanEvery: o.exposureEvery,
		AuditFsyncEvery:   o.auditFsync,
	})
	if err != nil {
		if errors.Is(err, node.ErrFirewall) {
			return fmt.Errorf("%w (run with --firewall=false to go without host rules, leaving the mesh address reachable from the LAN)", err)
		}
		return err
	}
	if o.tokenFile != "" && joinToken != "" {
		// The token is spent (or was not needed): do not leave a secret behind.
		if err := os.Remove(o.tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("join token file not removed", "file", o.tokenFile, "err", err)
		}
	}
	log.Info("node up", "name", n.Name(), "id", n.ID(), "addresses", n.Addresses(), "socket", filepath.Join(o.state, node.SocketName))
	select {
	case <-ctx.Done():
		log.Info("signal received; leaving the mesh")
	case <-n.Done():
	}
	return n.Close()
}

func stateFlag(e *env, fs interface {
	String(name, value, usage string) *string
}) *string {
	return fs.String("state", defaultStateDir(e), "state directory of the node (holds the LocalAPI socket)")
}

func localClient(state string) *localapi.Client {
	return localapi.NewClient(filepath.Join(state, node.SocketName))
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "status")
	state := stateFlag(e, fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	st, err := localClient(*state).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, st)
	}
	conn := "connected"
	if !st.Connected {
		conn = "not connected"
		if st.ControlError != "" {
			conn += ": " + st.ControlError
		}
	}
	svid := fmt.Sprintf("expires %s (in %s)", st.SVIDExpires.Local().Format(time.RFC3339), time.Until(st.SVIDExpires).Round(time.Second))
	if time.Until(st.SVIDExpires) <= 0 {
		svid = fmt.Sprintf("EXPIRED at %s; enroll again with `mcpmesh up --token TOKEN`", st.SVIDExpires.Local().Format(time.RFC3339))
	}
	netmap := fmt.Sprintf("v%d", st.NetmapVersion)
	switch {
	case st.NetmapExpired:
		netmap += fmt.Sprintf(", EXPIRED at %s without word from the coordinator: no peers, every call denied until it is reached", st.NetmapExpires.Local().Format(time.RFC3339))
	case !st.NetmapExpires.IsZero():
		netmap += fmt.Sprintf(", expires %s unless renewed", st.NetmapExpires.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "node:        %s\nSPIFFE ID:   %s\nmesh IPs:    %s\nSVID:        %s\ncoordinator: %s (%s)\nnetmap:      %s\ndata plane:  %s\n",
		st.Name, st.ID, joinAddrs(st.Addresses), svid, st.Coordinator, conn, netmap, st.DataPlane)
	if st.Firewall != "" {
		fmt.Fprintf(e.stdout, "firewall:    %s\n", st.Firewall)
	}
	if st.ServicesError != "" {
		fmt.Fprintf(e.stdout, "services:    NOT PUBLISHED: %s\n", st.ServicesError)
	}
	fmt.Fprintln(e.stdout)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tMESH IP\tENDPOINT\tLAST HANDSHAKE\tRX\tTX")
	for _, p := range st.Peers {
		ep := "-"
		if p.Endpoint.IsValid() {
			ep = p.Endpoint.String()
		}
		ip := "-"
		if len(p.Addresses) > 0 {
			ip = p.Addresses[0].String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", p.Name, ip, ep, ago(p.LastHandshake), p.RxBytes, p.TxBytes)
	}
	if len(st.Peers) == 0 {
		fmt.Fprintln(tw, "(no peers)")
	}
	return tw.Flush()
}

func runPing(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "ping")
	state := stateFlag(e, fs)
	count := fs.Int("c", 1, "number of pings")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	peer := pos[0]
	c := localClient(*state)
	for i := 0; i < max(*count, 1); i++ {
		res, err := c.Ping(ctx, peer)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "pong from %s (%s) in %s\n", res.Peer, res.Address, res.RTT.Round(time.Microsecond))
	}
	return nil
}

func runDown(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "down")
	state := stateFlag(e, fs)
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if err := localClient(*state).Down(ctx); err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "node is leaving the mesh")
	return nil
}
