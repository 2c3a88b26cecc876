// Command mcpmesh is the one binary of mcpmesh: the coordinator, the node
// daemon and the admin and user commands. Each file holds one command group
// and only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand (or group) of the CLI.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what commands share: the streams and the environment, passed in so
// tests can run commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError makes main print the command's usage and exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func commands() []command {
	return []command{
		{"coordinator", "init or run the coordinator (control plane)", runCoordinator},
		{"token", "create join tokens (admin)", runToken},
		{"up", "enroll if needed and run the node daemon in the foreground", runUp},
		{"status", "show this node, its identity and its peers", runStatus},
		{"ping", "round trip to a peer over the mesh", runPing},
		{"down", "stop the node daemon", runDown},
		{"install-service", "run the node daemon at boot (systemd unit or launchd plist)", runInstallService},
		{"nodes", "list or revoke nodes (admin)", runNodes},
		{"policy", "check, apply and inspect the tool-level policy (admin)", runPolicy},
		{"serve", "publish an MCP server on this node as a mesh-only service", runServe},
		{"connect", "stdio (or loopback HTTP) MCP endpoint for a mesh service", runConnect},
		{"services", "list services this node may call, or every service (admin)", runServices},
		{"audit", "the audit trail of MCP decisions (admin), or MCP servers exposed off the mesh", runAudit},
		{"demo", "run a coordinator and nodes in one process and show the mesh at work", runDemo},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "mcpmesh %s: %s\n", c.name, ue.msg)
			return 2
		default:
			fmt.Fprintf(e.stderr, "mcpmesh %s: %s\n", c.name, oneLine(err.Error()))
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "mcpmesh: unknown command %q; run `mcpmesh help`\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mcpmesh COMMAND [flags]\n\ncommands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun `mcpmesh COMMAND -h` for a command's flags")
}

// oneLine keeps an error to one line, as scripts read the first line.
func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("mcpmesh "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parse parses flags that may come before or after positional arguments
// (`nodes revoke NAME --data DIR` and `nodes revoke --data DIR NAME`), and
// checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		return nil, usageError{fmt.Sprintf("wrong number of arguments (%d); run `%s -h`", len(pos), fs.Name())}
	}
	return pos, nil
}

// version is set by the linker in release builds.
var version = "dev"

func runVersion(_ context.Context, e *env, _ []string) error {
	fmt.Fprintln(e.stdout, "mcpmesh", version)
	return nil
}
