package main

import (
	"context"
	"errors"
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

func runUp(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "up")
	coord := fs.String("coordinator", "", "coordinator URL, e.g. https://10.0.0.1:7443 (first start)")
	token := fs.String("token", "", "join token from `mcpmesh token create` (first start)")
	state := fs.String("state", defaultStateDir(e), "state directory (keys, SVID, last netmap, LocalAPI socket)")
	hostname := fs.String("hostname", "", "node name (default: this host's name)")
	port := fs.Uint("listen-port", 0, "WireGuard UDP port (default: any free port)")
	advertise := fs.String("advertise", "", "endpoint peers should use, ip:port (default: the address the coordinator sees)")
	tokenFile := fs.String("token-file", "", "read the join token from this file, and delete it once enrolled (for service units)")
	tun := fs.Bool("tun", false, "kernel TUN mode with a real interface (needs root)")
	firewall := fs.Bool("firewall", true, "in TUN mode, guard the mesh addresses with nftables rules (table inet mcpmesh) and allow serve --lockdown")
	exposureEvery := fs.Duration("exposure-scan", 15*time.Minute, "how often to scan this host for MCP servers reachable off the mesh and report them (0: never)")
	auditFsync := fs.Duration("audit-fsync", auditlog.DefaultSyncEvery, "how long an audit event, written before its call is forwarded, may wait for its fsync (0: hold every answer until its event is fsynced)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var newTunnel func(tunnel.Config, *slog.Logger) (tunnel.Tunnel, error) // nil: userspace
	if *tun {
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
	if *tun && *firewall {
		fw = platform.NewFirewall()
	}
	if *auditFsync < 0 {
		return usageError{"--audit-fsync must be 0 or more"}
	}
	if *token != "" && *tokenFile != "" {
		return usageError{"give --token or --token-file, not both"}
	}
	joinToken := *token
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
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
	if *port > 65535 {
		return usageError{"--listen-port must be at most 65535"}
	}
	log, err := newLogger(e, *logLevel)
	if err != nil {
		return err
	}
	n, err := node.Start(ctx, node.Config{
		StateDir:          *state,
		Coordinator:       *coord,
		Token:             strings.TrimSpace(joinToken),
		Hostname:          *hostname,
		ListenPort:        uint16(*port),
		Advertise:         *advertise,
		Logger:            log,
		NewTunnel:         newTunnel,
		Firewall:          fw,
		ExposureScanEvery: *exposureEvery,
		AuditFsyncEvery:   *auditFsync,
	})
	if err != nil {
		if errors.Is(err, node.ErrFirewall) {
			return fmt.Errorf("%w (run with --firewall=false to go without host rules, leaving the mesh address reachable from the LAN)", err)
		}
		return err
	}
	if *tokenFile != "" && joinToken != "" {
		// The token is spent (or was not needed): do not leave a secret behind.
		if err := os.Remove(*tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("join token file not removed", "file", *tokenFile, "err", err)
		}
	}
	log.Info("node up", "name", n.Name(), "id", n.ID(), "addresses", n.Addresses(), "socket", filepath.Join(*state, node.SocketName))
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
	fmt.Fprintf(e.stdout, "node:        %s\nSPIFFE ID:   %s\nmesh IPs:    %s\nSVID:        expires %s (in %s)\ncoordinator: %s (%s)\nnetmap:      v%d\ndata plane:  %s\n",
		st.Name, st.ID, joinAddrs(st.Addresses), st.SVIDExpires.Local().Format(time.RFC3339),
		time.Until(st.SVIDExpires).Round(time.Second), st.Coordinator, conn, st.NetmapVersion, st.DataPlane)
	if st.Firewall != "" {
		fmt.Fprintf(e.stdout, "firewall:    %s\n", st.Firewall)
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
