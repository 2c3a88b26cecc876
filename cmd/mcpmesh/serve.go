package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/bridge"
	"github.com/mcpmesh/mcpmesh/node/localapi"
)

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "serve")
	state := stateFlag(e, fs)
	upstream := fs.String("upstream", "", "Streamable HTTP MCP endpoint on loopback, e.g. http://127.0.0.1:9000/mcp")
	stdio := fs.String("stdio", "", "command line of a stdio MCP server the node starts and supervises")
	tags := fs.String("tags", "", "comma-separated service tags, e.g. tag:phi")
	lockdown := fs.Bool("lockdown", false, "also drop packets to the upstream's port arriving on any interface but loopback (node in TUN mode, as root)")
	upstreamUser := fs.String("upstream-user", "", "local user (name or uid) whose socket must take the --upstream connections; the node sends nothing to another user's")
	remove := fs.Bool("remove", false, "stop serving NAME")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c := localClient(*state)
	if *remove {
		if err := c.Unserve(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "no longer serving %s\n", pos[0])
		return nil
	}
	if (*upstream == "") == (*stdio == "") {
		return usageError{"want exactly one of --upstream URL or --stdio \"CMD ARGS\""}
	}
	if *upstreamUser != "" && *upstream == "" {
		return usageError{"--upstream-user applies to --upstream; a --stdio server runs as the node itself"}
	}
	res, err := c.Serve(ctx, localapi.ServeRequest{Name: pos[0], Upstream: *upstream, Stdio: *stdio, Tags: splitList(*tags), Lockdown: *lockdown, UpstreamUser: *upstreamUser})
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(e.stderr, "serving %s mesh-only at %s\n", res.Name, res.Endpoint)
	switch {
	case *upstream == "":
	case res.UpstreamOwner != "" && *upstreamUser == "":
		fmt.Fprintf(e.stderr, "upstream %s is served by %s; only that user is connected to (--upstream-user pins another)\n", *upstream, res.UpstreamOwner)
	case res.UpstreamOwner != "":
		fmt.Fprintf(e.stderr, "upstream %s is served by %s, as --upstream-user says\n", *upstream, res.UpstreamOwner)
	case *upstreamUser == "":
		fmt.Fprintf(e.stderr, "warning: nothing listens on %s yet; the first local user to serve it will be trusted (--upstream-user names the one)\n", *upstream)
	}
	if *lockdown {
		fmt.Fprintf(e.stderr, "locked down: the upstream's port accepts packets from loopback only\n")
	}
	return nil
}

func runConnect(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "connect")
	state := stateFlag(e, fs)
	listen := fs.String("listen", "", "serve a loopback Streamable HTTP endpoint on this address instead of stdio, e.g. 127.0.0.1:8811")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	name := pos[0]
	c := localClient(*state)
	// Say clearly, before any MCP traffic, why the service cannot be used.
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	var host string
	for _, s := range st.Catalog {
		if s.Name == name {
			host = s.Node
		}
	}
	if host == "" {
		return fmt.Errorf("service %q is not available to node %s: it does not exist, or no grant lets this node call it (see `mcpmesh services list`)", name, st.Name)
	}
	online := false
	for _, p := range st.Peers {
		if p.Name == host {
			online = true
		}
	}
	if !online {
		return fmt.Errorf("node %s, which serves %q, is not reachable from this node (offline or not a peer)", host, name)
	}
	target := &url.URL{Scheme: "http", Host: "local", Path: localapi.MCPPath(name)}
	if *listen == "" {
		b := &bridge.Stdio{Endpoint: target.String(), HTTPClient: c.HTTPClient(), In: e.stdin, Out: e.stdout}
		return b.Run(ctx)
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return usageError{fmt.Sprintf("--listen %q must be a loopback address and port, e.g. 127.0.0.1:8811", *listen)}
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return err
	}
	h := &bridge.HTTP{Target: target, Transport: c.HTTPClient().Transport}
	srv := &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(e.stderr, "MCP endpoint for %s: http://%s/mcp (local clients only)\n", name, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
