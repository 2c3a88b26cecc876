package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// A benchCase is one path the script measures, with the no-mesh path it is
// compared against.
type benchCase struct {
	name, label, baseline string
}

var benchCases = []benchCase{
	{"loopback", "plain loopback TCP (baseline of userspace mode)", ""},
	{"userspace", "mcpmesh userspace mode (wireguard-go + gVisor, loopback UDP)", "loopback"},
	{"veth", "plain veth between two namespaces (baseline of the TUN paths)", ""},
	{"tun", "mcpmesh TUN mode (tunnel/kernel, over the veth)", "veth"},
	{"wg", "bare wireguard-go, MTU 1420 (over the veth)", "veth"},
	{"nebula", "Nebula v1.10.3, MTU 1420 (over the veth)", "veth"},
}

// A target is one of issue 7's throughput goals: num/den at least min
// (strictly more when strict).
type target struct {
	num, den, label string
	min             float64
	strict          bool
}

var targets = []target{
	{"tun", "wg", "TUN mode / bare wireguard-go", 0.9, false},
	{"tun", "nebula", "TUN mode / Nebula", 1, true},
	{"userspace", "tun", "userspace mode / TUN mode", 0.5, false},
}

// summary holds one case's figures over its rounds.
type summary struct {
	tput    map[int]float64         // streams → median MB/s
	byRound map[int]map[int]float64 // streams → round → MB/s
	p50     float64                 // median of the rounds' p50, µs
	p99     float64                 // median of the rounds' p99, µs
	rtts    int                     // RTT series measured
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "result lines (JSON), as the other subcommands print them")
	want := fs.String("cases", "loopback,userspace,veth,tun,wg,nebula", "cases that must have results")
	nproc := fs.String("nproc", "", "the machine's core count, for the header")
	goVersion := fs.String("goversion", "", "go version, for the header")
	command := fs.String("command", "", "the command that produced the run, for the header")
	smoke := fs.Bool("smoke", false, "a smoke run: say the figures are no measurement and judge no target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	results, err := readResults(f)
	if err != nil {
		return err
	}
	sums := summarize(results)
	var missing []string
	for c := range strings.SplitSeq(*want, ",") {
		s, ok := sums[c]
		if !ok || len(s.tput) == 0 || s.rtts == 0 {
			missing = append(missing, c)
		}
	}
	fmt.Println("## Data plane (issue 7)")
	fmt.Println()
	if *smoke {
		fmt.Println("Smoke run: tiny transfers that only show every path carries data; these figures are no measurement.")
		fmt.Println()
	}
	writeReport(os.Stdout, sums, *nproc, *goVersion, *command, !*smoke)
	if len(missing) > 0 {
		return fmt.Errorf("no throughput or RTT result for %s", strings.Join(missing, ", "))
	}
	return nil
}

func readResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("result line %q: %w", line, err)
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("no results")
	}
	return out, nil
}

func summarize(results []Result) map[string]*summary {
	sums := map[string]*summary{}
	get := func(c string) *summary {
		if sums[c] == nil {
			sums[c] = &summary{tput: map[int]float64{}, byRound: map[int]map[int]float64{}}
		}
		return sums[c]
	}
	p50s, p99s := map[string][]float64{}, map[string][]float64{}
	for _, r := range results {
		switch r.Metric {
		case "tput":
			s := get(r.Case)
			if s.byRound[r.Streams] == nil {
				s.byRound[r.Streams] = map[int]float64{}
			}
			s.byRound[r.Streams][r.Round] = r.MBps
		case "rtt":
			get(r.Case)
			p50s[r.Case] = append(p50s[r.Case], r.P50us)
			p99s[r.Case] = append(p99s[r.Case], r.P99us)
		}
	}
	for _, s := range sums {
		for n, rs := range s.byRound {
			s.tput[n] = median(slices.Collect(maps.Values(rs)))
		}
	}
	for c, v := range p50s {
		s := sums[c]
		s.p50, s.p99, s.rtts = median(v), median(p99s[c]), len(v)
	}
	return sums
}

// pairedRatio is the median over rounds of a's rate over b's in the same
// round, at the given stream count: the two ran minutes apart at most, so
// a load that drifts over the run cancels out. Without common rounds it is
// the ratio of the medians; 0 when a side is missing.
func pairedRatio(a, b *summary, streams int) float64 {
	if a == nil || b == nil || a.tput[streams] == 0 || b.tput[streams] == 0 {
		return 0
	}
	var rs []float64
	for r, va := range a.byRound[streams] {
		if vb, ok := b.byRound[streams][r]; ok && va > 0 && vb > 0 {
			rs = append(rs, va/vb)
		}
	}
	if len(rs) == 0 {
		return a.tput[streams] / b.tput[streams]
	}
	return median(rs)
}

// median of vs (the mean of the middle two for an even count).
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratio formats a ratio, or "–" for a missing one.
func ratio(r float64) string {
	if r == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", r)
}

func mbps(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func us(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", v)
}

// writeReport prints the section: the medians of every case, then, when
// judge is set, issue 7's targets, then every round's rates.
func writeReport(w io.Writer, sums map[string]*summary, nproc, goVersion, command string, judge bool) {
	rounds := 0
	for _, s := range sums {
		for _, rs := range s.byRound {
			rounds = max(rounds, len(rs))
		}
	}
	fmt.Fprintf(w, "Machine: %s cores (`nproc`), %s. ", nproc, goVersion)
	plural := "s"
	if rounds == 1 {
		plural = ""
	}
	fmt.Fprintf(w, "Medians of %d round%s that alternate the cases (every other round in reverse order); ", rounds, plural)
	fmt.Fprintln(w, "a ratio is the median of the per-round ratios. Each transfer stops at its byte budget or its duration, whichever comes first.")
	if command != "" {
		fmt.Fprintf(w, "Command: `%s`.\n", command)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | 1 stream | 4 streams | RTT p50 | RTT p99 | vs its baseline (1 / 4 streams) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, c := range benchCases {
		s, ok := sums[c.name]
		if !ok {
			continue
		}
		vs := "1"
		if c.baseline != "" {
			b := sums[c.baseline]
			vs = ratio(pairedRatio(s, b, 1)) + " / " + ratio(pairedRatio(s, b, 4))
		}
		fmt.Fprintf(w, "| %s | %s MB/s | %s MB/s | %s | %s | %s |\n",
			c.label, mbps(s.tput[1]), mbps(s.tput[4]), us(s.p50), us(s.p99), vs)
	}
	if judge {
		writeTargets(w, sums)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every round (MB/s, 1 stream; 4 streams):")
	fmt.Fprintln(w)
	for _, c := range benchCases {
		s, ok := sums[c.name]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "- %s: %s; %s\n", c.name, joinRates(s.byRound[1]), joinRates(s.byRound[4]))
	}
}

// writeTargets prints the ratios issue 7 sets goals for, and whether each
// is met at both stream counts.
func writeTargets(w io.Writer, sums map[string]*summary) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| issue 7 target | 1 stream | 4 streams | goal | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|")
	for _, t := range targets {
		n, d := sums[t.num], sums[t.den]
		if n == nil || d == nil {
			continue
		}
		goal := fmt.Sprintf("≥ %.1f", t.min)
		if t.strict {
			goal = fmt.Sprintf("> %.0f", t.min)
		}
		r1, r4 := pairedRatio(n, d, 1), pairedRatio(n, d, 4)
		met := "yes"
		for _, r := range []float64{r1, r4} {
			switch {
			case r == 0:
				met = "–"
			case met != "–" && (r < t.min || (t.strict && r == t.min)):
				met = "**no**"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.label, ratio(r1), ratio(r4), goal, met)
	}
}

// joinRates lists a case's rates in round order.
func joinRates(rs map[int]float64) string {
	if len(rs) == 0 {
		return "–"
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(rs)) {
		parts = append(parts, fmt.Sprintf("%.0f", rs[r]))
	}
	return strings.Join(parts, ", ")
}
