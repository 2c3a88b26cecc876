package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// maxPolicyFile bounds what `policy check|apply` reads.
const maxPolicyFile = 512 << 10

func runPolicy(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"want a subcommand: check, apply, get, history, diff, rollback or explain"}
	}
	sub, args := args[0], args[1:]
	fs := newFlags(e, "policy "+sub)
	var af adminFlags
	switch sub {
	case "check":
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		src, err := readPolicyFile(pos[0])
		if err != nil {
			return err
		}
		pol, err := policy.Parse(filepath.Base(pos[0]), src)
		if err != nil {
			return policyErrors(e, pos[0], err)
		}
		fmt.Fprintf(e.stderr, "%s: ok: %d grants, %d tests passed\n", pos[0], pol.Grants(), pol.Tests())
		return nil
	case "apply":
		af.register(fs)
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		src, err := readPolicyFile(pos[0])
		if err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := c.ApplyPolicy(ctx, api.PolicySource{Filename: filepath.Base(pos[0]), Source: src})
		if errs := adminclient.PolicyErrors(err); errs != nil {
			return printPolicyErrors(e, pos[0], errs)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "applied %s as policy v%d: %d grants, %d tests passed\n", pos[0], resp.Version, resp.Grants, resp.Tests)
		for _, w := range resp.Warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
		return nil
	case "get":
		af.register(fs)
		version := fs.Uint64("version", 0, "version to show (default: the current one)")
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		pv, err := c.Policy(ctx, *version)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(pv.Source)
		return err
	case "history":
		af.register(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		h, err := c.PolicyHistory(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, h)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tAPPLIED\tAUTHOR\tFILE\tNOTE")
		for _, v := range h {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.Version, v.Created.Local().Format(time.RFC3339), v.Author, v.Filename, dash(v.Note))
		}
		return tw.Flush()
	case "diff":
		af.register(fs)
		pos, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		a, err := parseVersionArg(pos[0])
		if err != nil {
			return err
		}
		b, err := parseVersionArg(pos[1])
		if err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		pa, err := c.Policy(ctx, a)
		if err != nil {
			return err
		}
		pb, err := c.Policy(ctx, b)
		if err != nil {
			return err
		}
		return unifiedDiff(e.stdout, fmt.Sprintf("v%d/%s", a, pa.Filename), fmt.Sprintf("v%d/%s", b, pb.Filename), string(pa.Source), string(pb.Source))
	case "rollback":
		af.register(fs)
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		v, err := parseVersionArg(pos[0])
		if err != nil {
			return err
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := c.RollbackPolicy(ctx, v)
		if errs := adminclient.PolicyErrors(err); errs != nil {
			return printPolicyErrors(e, fmt.Sprintf("v%d", v), errs)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "rolled back: v%d's policy is now v%d\n", v, resp.Version)
		return nil
	case "explain":
		af.register(fs)
		src := fs.String("src", "", "caller: node:NAME or a SPIFFE ID")
		dst := fs.String("dst", "", "service: svc:NAME")
		tool := fs.String("tool", "", "tool name")
		resource := fs.String("resource", "", "resource URI (instead of --tool)")
		prompt := fs.String("prompt", "", "prompt name (instead of --tool)")
		argsJSON := fs.String("args", "", "the call's arguments as a JSON object, for `when` conditions")
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		req := api.ExplainRequest{Src: *src, Dst: *dst}
		set := 0
		for kind, v := range map[string]string{"tool": *tool, "resource": *resource, "prompt": *prompt} {
			if v != "" {
				req.Kind, req.Name = kind, v
				set++
			}
		}
		if *src == "" || *dst == "" || set != 1 {
			return usageError{"want --src, --dst and one of --tool, --resource or --prompt"}
		}
		if *argsJSON != "" {
			if err := json.Unmarshal([]byte(*argsJSON), &req.Args); err != nil {
				return usageError{fmt.Sprintf("--args is not a JSON object: %v", err)}
			}
		}
		c, err := af.client(e)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := c.ExplainPolicy(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, resp.Explanation)
		return nil
	}
	return usageError{fmt.Sprintf("unknown subcommand %q", sub)}
}

func parseVersionArg(s string) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "v"), 10, 64)
	if err != nil || v == 0 {
		return 0, usageError{fmt.Sprintf("%q is not a policy version (see `mcpmesh policy history`)", s)}
	}
	return v, nil
}

func readPolicyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPolicyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPolicyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPolicyFile)
	}
	return b, nil
}

// policyErrors prints every error of a local check, one per line as
// FILE:LINE:COL: message, and returns a one-line summary.
func policyErrors(e *env, path string, err error) error {
	var list policy.ErrorList
	var one *policy.Error
	switch {
	case errors.As(err, &list):
		var out []api.PolicyError
		for _, pe := range list {
			out = append(out, api.PolicyError{Line: pe.Line, Col: pe.Col, Msg: pe.Msg})
		}
		return printPolicyErrors(e, path, out)
	case errors.As(err, &one):
		return printPolicyErrors(e, path, []api.PolicyError{{Line: one.Line, Col: one.Col, Msg: one.Msg}})
	}
	return err
}

func printPolicyErrors(e *env, path string, errs []api.PolicyError) error {
	for _, pe := range errs {
		fmt.Fprintf(e.stderr, "%s:%d:%d: %s\n", path, pe.Line, pe.Col, pe.Msg)
	}
	return fmt.Errorf("%s: %d error(s); nothing was applied", path, len(errs))
}
