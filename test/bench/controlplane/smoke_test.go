package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientEnv makes the test binary act as a client process, so the smoke
// test needs no second build.
const clientEnv = "MCPMESH_CPBENCH_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(clientEnv) == "1" {
		if err := cmdClient(os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane client: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmallMeshesCompleteEveryPhase runs the real benchmark small: the
// coordinator binary built from this tree, two client processes, 20 and
// then 50 nodes. Every phase must complete, and what one join costs its
// peer must not depend on the mesh size.
func TestSmallMeshesCompleteEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mcpmesh and starts processes")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the smoke test builds cmd/mcpmesh and needs the go command: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mcpmesh")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/mcpmesh/mcpmesh/cmd/mcpmesh").CombinedOutput(); err != nil {
		t.Fatalf("build mcpmesh: %v\n%s", err, out)
	}
	var progress bytes.Buffer
	run := func(n int) *result {
		t.Helper()
		r, err := runOne(config{
			mcpmesh: bin,
			clientCmd: func(args []string) *exec.Cmd {
				cmd := exec.Command(os.Args[0], args...)
				cmd.Env = append(os.Environ(), clientEnv+"=1")
				return cmd
			},
			nodes:   n,
			clients: 2,
			conc:    8,
			timeout: time.Minute,
			idle:    200 * time.Millisecond,
			workDir: filepath.Join(dir, fmt.Sprintf("n%d", n)),
			log:     &progress,
		})
		if err != nil {
			t.Fatalf("%d nodes: %v\n%s", n, err, progress.String())
		}
		return r
	}
	small, large := run(20), run(50)
	var report strings.Builder
	writeReport(&report, []*result{small, large}, "go test ./test/bench/controlplane")
	t.Logf("progress:\n%s\n%s", progress.String(), report.String())

	for _, r := range []*result{small, large} {
		for _, p := range []string{phaseEnroll, phaseFirstMaps, phasePolicy, phaseJoin, phaseHubJoin} {
			if _, ok := r.CPU[p]; !ok {
				t.Errorf("%d nodes: no coordinator CPU recorded for phase %s", r.Nodes, p)
			}
		}
		if r.EnrollAll <= 0 || r.FirstMaps <= 0 || r.PolicyReach <= 0 || r.JoinReach <= 0 || r.HubJoinReach <= 0 || r.RTT <= 0 {
			t.Errorf("%d nodes: a phase has no time: %+v", r.Nodes, r)
		}
		if r.PeakRSS == 0 || r.PolicyBytesMin == 0 || r.JoinBytesHub == 0 || r.HubJoinBytesPerNode == 0 {
			t.Errorf("%d nodes: a measure is missing: %+v", r.Nodes, r)
		}
		// Under a policy, a join is sent only to the nodes that see it.
		if r.JoinMsgsOthers != 0 {
			t.Errorf("%d nodes: one join sent %d messages to nodes that do not see it", r.Nodes, r.JoinMsgsOthers)
		}
	}
	// A few bytes of slack for longer numbers (versions, addresses).
	if d := int64(large.JoinBytesHub) - int64(small.JoinBytesHub); d > 16 || d < -16 {
		t.Errorf("one join cost its peer %d bytes at 20 nodes but %d at 50: it grows with the mesh", small.JoinBytesHub, large.JoinBytesHub)
	}
	if large.PolicyBytesMax > small.PolicyBytesMax+16 {
		t.Errorf("a policy change cost a node %d bytes at 20 nodes but %d at 50", small.PolicyBytesMax, large.PolicyBytesMax)
	}
}
