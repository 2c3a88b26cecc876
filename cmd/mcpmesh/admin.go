package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

func runToken(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return usageError{"want: token create [--tags tag:a,tag:b] [--ttl 24h] [--reusable] [--name NODE]"}
	}
	fs := newFlags(e, "token create")
	var af adminFlags
	af.register(fs)
	tags := fs.String("tags", "", "comma-separated tags the enrolled node gets, e.g. tag:server")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token can be used")
	reusable := fs.Bool("reusable", false, "allow more than one node to enroll with this token")
	name := fs.String("name", "", "the only node name the token enrolls (up --hostname), so it cannot claim a name the policy grants to another machine")
	if _, err := parse(fs, args[1:], 0, 0); err != nil {
		return err
	}
	c, err := af.client(e)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.CreateToken(ctx, api.TokenCreateRequest{Tags: splitList(*tags), TTL: api.Duration(*ttl), Reusable: *reusable, Name: *name})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.Token)
	use := "single-use"
	if *reusable {
		use = "reusable"
	}
	if *name != "" {
		use += " for node " + *name
	}
	fmt.Fprintf(e.stderr, "%s join token, expires %s\n", use, resp.Expires.Local().Format(time.RFC3339))
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runNodes(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"want: nodes list | nodes revoke NAME"}
	}
	fs := newFlags(e, "nodes "+args[0])
	var af adminFlags
	af.register(fs)
	switch args[0] {
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parse(fs, args[1:], 0, 0); err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, nodes)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tMESH IP\tTAGS\tSTATE\tLAST SEEN")
		for _, n := range nodes {
			state := "offline"
			switch {
			case n.Revoked:
				state = "revoked"
			case n.Online:
				state = "online"
			}
			ip := "-"
			if len(n.Addresses) > 0 {
				ip = n.Addresses[0].String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, ip, dash(strings.Join(n.Tags, ",")), state, ago(n.LastSeen))
		}
		return tw.Flush()
	case "revoke":
		pos, err := parse(fs, args[1:], 1, 1)
		if err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Revoke(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "revoked %s: removed from every peer's netmap; its renewals and re-enrollment are refused\n", pos[0])
		return nil
	}
	return usageError{fmt.Sprintf("unknown subcommand %q; want list or revoke", args[0])}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago renders a past time for people: "3s ago", "never".
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	case d < 48*time.Hour:
		return d.Round(time.Minute).String() + " ago"
	}
	return t.Local().Format("2006-01-02 15:04")
}
