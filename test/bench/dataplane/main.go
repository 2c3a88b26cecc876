// Command dataplane measures the mcpmesh data plane (issue 7): TCP
// throughput over one and four streams and the round trip of a small echo,
// over plain loopback and a plain veth pair (the baselines), over mcpmesh's
// userspace (gVisor netstack) and kernel-TUN modes, and over bare
// wireguard-go and Nebula as scripts/bench-dataplane.sh sets them up.
//
// It is a set of subcommands that the script runs inside the namespaces it
// creates; each measurement prints one JSON line (a Result), and report
// turns the lines of a whole run into the markdown section of BENCHMARKS.md.
//
//	server    sink and echo server on a TCP address
//	client    bulk transfer over N streams; prints MB/s
//	rtt       sequential small echo round trips; prints p50 and p99
//	userspace both netstack tunnels (or plain loopback) in this process, measured
//	tun       a kernel-mode mcpmesh tunnel in this namespace until stopped
//	keygen    a WireGuard key pair, base64
//	wgset     configure a bare wireguard-go device through its UAPI socket
//	report    medians, ratios and targets of a run, as markdown
//
// Every transfer is bounded in bytes and in time, and every long-running
// subcommand stops by itself after -lifetime.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/mcpmesh/mcpmesh/test/bench/subcmd"
)

func main() {
	subcmd.Main("dataplane", "usage: dataplane server|client|rtt|userspace|tun|keygen|wgset|report [flags]", map[string]func([]string) error{
		"server":    cmdServer,
		"client":    cmdClient,
		"rtt":       cmdRTT,
		"userspace": cmdUserspace,
		"tun":       cmdTun,
		"keygen":    cmdKeygen,
		"wgset":     cmdWGSet,
		"report":    cmdReport,
	})
}

// startCPUProfile writes a CPU profile to path until stop is called; an
// empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
