package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

func runServices(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return usageError{"want: services list [--all]"}
	}
	fs := newFlags(e, "services list")
	state := stateFlag(e, fs)
	all := fs.Bool("all", false, "admin: every published service, not only what this node may call")
	asJSON := fs.Bool("json", false, "print JSON")
	var af adminFlags
	af.register(fs)
	if _, err := parse(fs, args[1:], 0, 0); err != nil {
		return err
	}
	var svcs []api.Service
	if *all {
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		if svcs, err = c.Services(ctx); err != nil {
			return err
		}
	} else {
		st, err := localClient(*state).Status(ctx)
		if err != nil {
			return err
		}
		svcs = st.Catalog
	}
	if *asJSON {
		return writeJSON(e.stdout, svcs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNODE\tTAGS")
	for _, s := range svcs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Node, dash(strings.Join(s.Tags, ",")))
	}
	if len(svcs) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	return tw.Flush()
}
