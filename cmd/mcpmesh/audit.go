package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/node"
)

func runAudit(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "exposure" {
		return runAuditExposure(ctx, e, args[1:])
	}
	if len(args) > 0 && args[0] == "digest" {
		return runAuditDigest(e, args[1:])
	}
	if len(args) == 0 || args[0] != "tail" {
		return usageError{"want: audit tail [--caller ID] [--service S] [--tool T] [--decision allow|deny], audit exposure [--all], or audit digest ARGUMENTS"}
	}
	fs := newFlags(e, "audit tail")
	var af adminFlags
	af.register(fs)
	var q api.AuditQuery
	fs.StringVar(&q.Caller, "caller", "", "caller: node:NAME or a SPIFFE ID")
	fs.StringVar(&q.Service, "service", "", "service name")
	fs.StringVar(&q.Tool, "tool", "", "tool name (or resource URI, prompt name)")
	fs.StringVar(&q.Decision, "decision", "", "allow or deny")
	fs.IntVar(&q.Limit, "n", 50, "how many of the newest events")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if _, err := parse(fs, args[1:], 0, 0); err != nil {
		return err
	}
	if q.Decision != "" && q.Decision != "allow" && q.Decision != "deny" {
		return usageError{fmt.Sprintf("--decision %q: want allow or deny", q.Decision)}
	}
	c, err := af.client(e)
	if err != nil {
		return err
	}
	defer c.Close()
	if name, ok := cutNodePrefix(q.Caller); ok {
		// A node name is resolved to its SPIFFE ID, which is what is stored.
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return err
		}
		q.Caller = ""
		for _, n := range nodes {
			if n.Name == name {
				q.Caller = n.ID
			}
		}
		if q.Caller == "" {
			return fmt.Errorf("no node named %q (see `mcpmesh nodes list`)", name)
		}
	}
	evs, err := c.Audit(ctx, q)
	if err != nil {
		return err
	}
	// Oldest first, like tail.
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	if *asJSON {
		for _, ev := range evs {
			if err := writeJSONLine(e.stdout, ev); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDECISION\tCALLER\tSERVICE\tMETHOD\tTOOL\tREASON\tLATENCY")
	for _, ev := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format(time.DateTime), ev.Decision, ev.Caller,
			ev.Service, ev.Method, dash(ev.Tool), ev.Reason, (time.Duration(ev.LatencyUS) * time.Microsecond).String())
	}
	return tw.Flush()
}

func cutNodePrefix(s string) (string, bool) {
	if len(s) > 5 && s[:5] == "node:" {
		return s[5:], true
	}
	return "", false
}

// runAuditExposure shows the MCP servers reachable off the mesh: on this
// host (a fresh scan by the node, reported to the coordinator), or with
// --all every node's latest report from the coordinator.
func runAuditExposure(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "audit exposure")
	state := stateFlag(e, fs)
	all := fs.Bool("all", false, "every node's latest report, from the coordinator (admin)")
	var af adminFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print the report(s) as JSON")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var reps []api.ExposureReport
	if *all {
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		if reps, err = c.Exposure(ctx); err != nil {
			return err
		}
	} else {
		res, err := localClient(*state).ScanExposure(ctx)
		if err != nil {
			return err
		}
		if res.ReportError != "" {
			fmt.Fprintf(e.stderr, "warning: the coordinator did not get this report: %s\n", res.ReportError)
		}
		reps = []api.ExposureReport{res.Report}
	}
	if *asJSON {
		for _, r := range reps {
			if err := writeJSONLine(e.stdout, r); err != nil {
				return err
			}
		}
		return nil
	}
	if *all && len(reps) == 0 {
		fmt.Fprintln(e.stdout, "no node has reported an exposure scan yet")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tPROCESS\tMCP SERVER\tTRANSPORT\tMESH SERVICE\tSTATUS")
	exposed := 0
	for _, r := range reps {
		node := r.Node
		if node == "" {
			node = "(this host)"
		}
		if len(r.Findings) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\tno MCP server reachable off the mesh (scanned %s)\n", node, r.ScannedAt.Local().Format(time.DateTime))
		}
		for _, f := range r.Findings {
			status := "locked down"
			if f.Exposed() {
				status = "EXPOSED"
				exposed++
			}
			proc := "-"
			if f.PID != 0 {
				proc = fmt.Sprintf("%s[%d]", f.Process, f.PID)
			}
			server := dash(strings.TrimSpace(f.ServerName + " " + f.ServerVersion))
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", node, f.Address, proc, server, f.Transport, dash(f.Service), status)
		}
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t\t\t\t\t\tscan incomplete: %s\n", node, r.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if exposed > 0 {
		fmt.Fprintf(e.stderr, "%d MCP server(s) reachable off the mesh: bind them to 127.0.0.1 and serve them with `mcpmesh serve`, or add --lockdown\n", exposed)
	}
	return nil
}

// runAuditDigest prints the digest that the serving node's audit events
// record for a call with the given arguments, so that whoever holds the
// node's key (root on that host) can check which arguments a call had;
// without the key a digest gives nothing away.
func runAuditDigest(e *env, args []string) error {
	fs := newFlags(e, "audit digest")
	state := stateFlag(e, fs)
	keyFile := fs.String("key-file", "", "the serving node's digest key (default: "+node.DigestKeyFile+" in --state)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	arguments := []byte(pos[0])
	if pos[0] == "-" {
		if arguments, err = io.ReadAll(io.LimitReader(e.stdin, 4<<20)); err != nil {
			return fmt.Errorf("reading the arguments: %w", err)
		}
	}
	path := *keyFile
	if path == "" {
		path = filepath.Join(*state, node.DigestKeyFile)
	}
	key, err := node.ReadDigestKey(path)
	if err != nil {
		return err
	}
	d, err := mcp.ArgsDigest(key, arguments)
	if err != nil {
		return usageError{err.Error()}
	}
	fmt.Fprintln(e.stdout, d)
	return nil
}
