package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

func runAudit(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "tail" {
		return usageError{"want: audit tail [--caller ID] [--service S] [--tool T] [--decision allow|deny]"}
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
