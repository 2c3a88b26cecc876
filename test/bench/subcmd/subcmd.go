// Package subcmd runs the subcommands of the benchmark tools
// (test/bench/controlplane, test/bench/dataplane), which scripts drive as
// "TOOL NAME FLAGS...": one dispatcher, so both fail and exit alike.
package subcmd

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// Main runs the subcommand named by the first argument with the rest, and
// exits: 2 for a usage error (an unknown or missing subcommand, or -h),
// 1 when the subcommand fails, with its error on stderr prefixed by the
// tool's and the subcommand's names.
func Main(tool, usage string, cmds map[string]func([]string) error) {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", tool, os.Args[1], err)
		os.Exit(1)
	}
}
