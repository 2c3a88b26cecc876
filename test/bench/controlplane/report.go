package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// cmdReport prints the markdown of results saved with run -json.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "results, one JSON object a line, as run -json writes them")
	command := fs.String("command", "", "the command line to print in the report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	var rs []*result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		rs = append(rs, &r)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if len(rs) == 0 {
		return errors.New("results: none")
	}
	writeReport(os.Stdout, rs, *command)
	return nil
}

// Targets of issue 7 at 10,000 nodes.
const (
	targetReach = 2 * time.Second
	targetRSS   = 1 << 30
)

// writeReport prints the results as the markdown of BENCHMARKS.md.
func writeReport(w io.Writer, rs []*result, command string) {
	fmt.Fprintf(w, "`%s` (%s, %d cores)\n\n", command, runtime.Version(), runtime.NumCPU())
	rep := 1
	if len(rs) > 0 {
		rep = rs[0].Repeat
	}
	fmt.Fprintf(w, "Times; a policy change and a join are the median of %d, the worst in brackets; × RTT against the median mTLS round trip of a trivial admin request to the same coordinator, measured just before the policy changes:\n\n", rep)
	fmt.Fprintln(w, "| N | clients | enroll all | enrollments/s | first maps | mTLS RTT | policy change reaches all | × RTT | one join reaches the hub | × RTT | a hub's join reaches all |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %s | %.0f | %s | %s | %s (%s) | %.0f× | %s (%s) | %.0f× | %s |\n",
			count(r.Nodes), r.Clients, secs(r.EnrollAll), float64(r.Nodes)/r.EnrollAll, secs(r.FirstMaps), secs(r.RTT),
			secs(r.PolicyReach), secs(r.PolicyReachMax), r.PolicyReach/r.RTT,
			secs(r.JoinReach), secs(r.JoinReachMax), r.JoinReach/r.RTT, secs(r.HubJoinReach))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Bytes on the netmap streams (signed JSON lines, as the nodes accepted them), per change:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | policy change, per node (min–max) | policy change, hub | one join, to its peer (the hub) | one join, per other node | a hub's join, per node |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %.0f B (%d–%d) | %.0f B | %d B | %.0f B (%s messages in all) | %.0f B |\n",
			count(r.Nodes), r.PolicyBytesPerNode, r.PolicyBytesMin, r.PolicyBytesMax, r.PolicyBytesHub,
			r.JoinBytesHub, r.JoinBytesOthers, count(int(r.JoinMsgsOthers)), r.HubJoinBytesPerNode)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The coordinator alone (/proc of its process): CPU seconds per phase, per change for a policy change and a join; all client processes' CPU in brackets (they share the cores):")
	fmt.Fprintln(w)
	phases := []string{phaseEnroll, phaseFirstMaps, phaseIdle, phasePolicy, phaseJoin, phaseHubJoin}
	fmt.Fprintf(w, "| N | CPU-s %s | CPU per node per policy change | RSS, all streams open | peak RSS |\n", strings.Join(phases, " | CPU-s "))
	fmt.Fprintf(w, "|---:|%s---:|---:|---:|\n", strings.Repeat("---:|", len(phases)))
	for _, r := range rs {
		fmt.Fprintf(w, "| %s |", count(r.Nodes))
		for _, p := range phases {
			per := 1.0
			if p == phasePolicy || p == phaseJoin {
				per = float64(max(r.Repeat, 1))
			}
			fmt.Fprintf(w, " %.2f (%.2f) |", r.CPU[p]/per, r.ClientCPU[p]/per)
		}
		perNode := r.CPU[phasePolicy] / float64(max(r.Repeat, 1)) / float64(r.Nodes)
		fmt.Fprintf(w, " %.0f µs | %s | %s |\n", perNode*1e6, size(r.RSSStreams), size(r.PeakRSS))
	}
	fmt.Fprintln(w)
	if len(rs) > 0 {
		fmt.Fprintf(w, "Idle: %s with every stream open and nothing changing (heartbeats only).\n", secs(rs[0].Idle))
	}
	for _, r := range rs {
		if r.Coordinator != "process" {
			fmt.Fprintf(w, "At %s nodes the coordinator ran inside the driver (profiling): its figures include the driver's.\n", count(r.Nodes))
		}
		if r.Nodes < 10000 {
			continue
		}
		fmt.Fprintf(w, "Targets at %s nodes: a change reaches every node in under %s: %s (median %s, worst %s); peak RSS under 1 GiB: %s (%s).\n",
			count(r.Nodes), secs(targetReach.Seconds()), verdict(r.PolicyReach < targetReach.Seconds()), secs(r.PolicyReach), secs(r.PolicyReachMax),
			verdict(r.PeakRSS < targetRSS), size(r.PeakRSS))
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// secs renders seconds with a unit that keeps 2–3 significant digits.
func secs(s float64) string {
	switch {
	case s < 0.01:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1e3)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

func size(b uint64) string {
	switch {
	case b >= 10<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	case b >= 10<<10:
		return fmt.Sprintf("%d KiB", b>>10)
	}
	return fmt.Sprintf("%d B", b)
}

// count renders 10000 as 10,000.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
