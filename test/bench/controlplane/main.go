// Command controlplane measures the mcpmesh control plane at scale (issue
// 7): one coordinator, the real binary in its own process, and N
// lightweight nodes (meshtest.LightNode: real enrollment, real mTLS netmap
// streams, real Ed25519 checks, no tunnel) spread over several client
// processes, so that neither side runs out of file descriptors and the
// coordinator's CPU time and memory can be read from /proc alone.
//
//	run     the driver: for each N, a fresh coordinator, the client
//	        processes and the phases (enroll, first maps, idle, policy
//	        changes, joins that reach the hub, a join that reaches everyone);
//	        prints a markdown report, and JSON results with -json
//	client  one client process: enrolls K light nodes with a reusable token,
//	        runs their streams and answers the driver's requests, one JSON
//	        line each way on stdin and stdout
//	report  the markdown of results saved with run -json
//
// The policy gives every node one service to call, on a node named hub,
// so every light node has exactly one peer and the hub has all of them.
// Everything runs on 127.0.0.1; every wait is bounded by a timeout and
// every client process stops by itself after -lifetime.
package main

import (
	"github.com/mcpmesh/mcpmesh/test/bench/subcmd"
)

func main() {
	subcmd.Main("controlplane", "usage: controlplane run|client|report [flags]", map[string]func([]string) error{
		"run":    cmdRun,
		"client": cmdClient,
		"report": cmdReport,
	})
}
