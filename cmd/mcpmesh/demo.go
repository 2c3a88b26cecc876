package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node"
)

// runDemo tells the story of the mesh in one process on embedded defaults:
// a coordinator with its SQLite store, three nodes with userspace WireGuard,
// traffic over the mesh, and a revocation cutting a node off.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "demo")
	keep := fs.Bool("keep", false, "keep the demo's data directory instead of deleting it")
	verbose := fs.Bool("v", false, "show the daemons' logs")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mcpmesh-demo-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(e.stdout, "data kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logOut := io.Discard
	if *verbose {
		logOut = e.stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d := &demo{e: e, start: time.Now()}

	d.step("1. The coordinator: a trust-domain CA, a netmap signing key and an embedded SQLite store")
	coordDir := filepath.Join(dir, "coord")
	if err := coordinator.Init(coordDir, "demo.mcpmesh", time.Now()); err != nil {
		return err
	}
	srv, err := coordinator.Open(ctx, coordDir, coordinator.Config{Logger: log.With("c", "coordinator")})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { stopServe(); <-served }()
	url := "https://" + ln.Addr().String()
	d.say("coordinator for spiffe://%s on %s (CA %s…)", srv.TrustDomain().Name(), url, srv.CAFingerprint().String()[:23])

	cred, err := adminclient.LoadCredential(filepath.Join(coordDir, coordinator.FileAdmin))
	if err != nil {
		return err
	}
	admin, err := adminclient.New(url, cred)
	if err != nil {
		return err
	}
	defer admin.Close()

	d.step("2. Three hosts enroll with single-use join tokens and get SPIFFE identities")
	names := []struct{ name, tags string }{{"ehr-server", "tag:phi"}, {"ward-7-laptop", "tag:clinical"}, {"billing-bot", "tag:billing"}}
	nodes := map[string]*node.Node{}
	for _, nn := range names {
		tok, err := admin.CreateToken(ctx, api.TokenCreateRequest{Tags: splitList(nn.tags), TTL: api.Duration(10 * time.Minute)})
		if err != nil {
			return err
		}
		n, err := node.Start(ctx, node.Config{
			StateDir: filepath.Join(dir, nn.name), Coordinator: url, Token: tok.Token, Hostname: nn.name,
			SocketPath: "-", Logger: log.With("c", nn.name),
		})
		if err != nil {
			return err
		}
		defer n.Close()
		nodes[nn.name] = n
		d.say("%-14s %-44s mesh IP %s", nn.name, n.ID(), n.Addresses()[0])
	}
	tok, err := admin.CreateToken(ctx, api.TokenCreateRequest{TTL: api.Duration(time.Minute)})
	if err != nil {
		return err
	}
	_, err = node.Start(ctx, node.Config{StateDir: filepath.Join(dir, "intruder"), Coordinator: url, Token: tok.Token, Hostname: "ehr-server", SocketPath: "-", Logger: log})
	d.say("a second host claiming the name ehr-server is refused: %v", shorten(err))

	server, laptop, bot := nodes["ehr-server"], nodes["ward-7-laptop"], nodes["billing-bot"]
	if err := waitPeers(ctx, laptop, 2); err != nil {
		return err
	}

	d.step("3. Traffic over the WireGuard mesh: a service that listens on the mesh address only")
	svc, err := server.Tunnel().ListenTCP(9000)
	if err != nil {
		return err
	}
	defer svc.Close()
	go serveGreeting(svc, server)
	for _, n := range []*node.Node{laptop, bot} {
		reply, err := callGreeting(ctx, n, server)
		if err != nil {
			return fmt.Errorf("%s → ehr-server: %w", n.Name(), err)
		}
		d.say("%-14s → ehr-server:9000  %q", n.Name(), reply)
	}
	rtt, err := laptop.Ping(ctx, "ehr-server")
	if err != nil {
		return err
	}
	d.say("ping ehr-server from ward-7-laptop over the mesh: %s", rtt.RTT.Round(time.Microsecond))
	if c, err := net.DialTimeout("tcp", "127.0.0.1:9000", time.Second); err == nil {
		c.Close()
		d.say("WARNING: something else listens on 127.0.0.1:9000 on this host")
	} else {
		d.say("the same port from the host's own network (127.0.0.1:9000): %s", shorten(err))
	}

	if err := d.mcpStory(ctx, admin, server, laptop, bot); err != nil {
		return err
	}

	d.step("5. An admin revokes billing-bot: every peer drops it at once")
	t0 := time.Now()
	if err := admin.Revoke(ctx, "billing-bot"); err != nil {
		return err
	}
	for len(server.Netmap().Peers) != 1 && time.Since(t0) < 5*time.Second {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(t0)
	cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = callGreeting(cctx, bot, server)
	cancel()
	if err == nil {
		return fmt.Errorf("billing-bot still reaches ehr-server after revocation")
	}
	d.say("billing-bot → ehr-server after revocation: refused (%s); peers of ehr-server now: %s", shorten(err), peerNames(server))
	reply, err := callGreeting(ctx, laptop, server)
	if err != nil {
		return err
	}
	d.say("ward-7-laptop is unaffected: %q", reply)
	d.say("from the admin's command to ehr-server's WireGuard dropping the peer: %s", took.Round(time.Microsecond))

	list, err := admin.Nodes(ctx)
	if err != nil {
		return err
	}
	d.step("6. mcpmesh nodes list")
	for _, n := range list {
		state := "online"
		if n.Revoked {
			state = "revoked"
		}
		d.say("%-14s %-16s %-14s %s", n.Name, n.Addresses[0], strings.Join(n.Tags, ","), state)
	}
	fmt.Fprintf(e.stdout, "\ndemo finished in %s\n", time.Since(d.start).Round(time.Millisecond))
	return nil
}

type demo struct {
	e     *env
	start time.Time
}

func (d *demo) step(s string) { fmt.Fprintf(d.e.stdout, "\n== %s\n", s) }

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "   "+format+"\n", args...)
}

func shorten(err error) string {
	if err == nil {
		return "no error"
	}
	s := err.Error()
	if i := strings.LastIndex(s, "coordinator: "); i >= 0 {
		return s[i+len("coordinator: "):]
	}
	if i := strings.LastIndex(s, ": "); i > 0 && len(s) > 90 {
		s = s[i+2:]
	}
	return s
}

func waitPeers(ctx context.Context, n *node.Node, want int) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(n.Netmap().Peers) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not see %d peers in time", n.Name(), want)
}

func peerNames(n *node.Node) string {
	var out []string
	for _, p := range n.Netmap().SortedPeers() {
		out = append(out, p.Name)
	}
	return strings.Join(out, ", ")
}

// serveGreeting answers each connection with the caller's identity, which
// the server learns from the tunnel (the source address of a WireGuard peer).
func serveGreeting(ln net.Listener, server *node.Node) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			who := "unknown"
			if ap, err := netipAddrPort(c.RemoteAddr()); err == nil {
				if p, err := server.WhoIs(ap); err == nil {
					who = p.ID
				}
			}
			fmt.Fprintf(c, "hello %s", who)
		}()
	}
}

func callGreeting(ctx context.Context, from, to *node.Node) (string, error) {
	c, err := from.Tunnel().DialContext(ctx, "tcp", net.JoinHostPort(to.Addresses()[0].String(), "9000"))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
