package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// TestClientAndServerCountEveryByteAndTimeRoundTrips runs the load code
// against the server over loopback: bulk reports only bytes the server
// counted, and rtt reports ordered percentiles.
func TestClientAndServerCountEveryByteAndTimeRoundTrips(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); serve(ctx, l) }()
	defer func() { cancel(); <-served }()
	dial := tcpDial(l.Addr().String())

	for _, streams := range []int{1, 4} {
		const total = 3<<20 + 5 // not a multiple of the streams or the buffer
		r, err := bulk(ctx, dial, streams, total, 10*time.Second)
		if err != nil {
			t.Fatalf("%d streams: %v", streams, err)
		}
		if want := total / int64(streams) * int64(streams); r.Bytes != want || r.MBps <= 0 || r.Streams != streams {
			t.Errorf("%d streams: %+v, want %d bytes at a positive rate", streams, r, want)
		}
	}
	r, err := rtt(ctx, dial, 50, 64, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 50 || r.P50us <= 0 || r.P99us < r.P50us {
		t.Errorf("rtt: %+v, want 50 round trips with 0 < p50 <= p99", r)
	}
}

// TestReportTakesMediansAndJudgesTargets feeds report three rounds of
// every case and checks the medians, the per-round ratios and the verdicts.
func TestReportTakesMediansAndJudgesTargets(t *testing.T) {
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	rates := map[string][3]float64{
		"loopback": {3000, 2000, 4000}, "userspace": {300, 200, 250},
		"veth": {3000, 3000, 3000}, "tun": {400, 390, 410}, "wg": {400, 400, 400}, "nebula": {80, 70, 90},
	}
	for c, rs := range rates {
		for i, v := range rs {
			for _, s := range []int{1, 4} {
				enc.Encode(Result{Case: c, Round: i + 1, Metric: "tput", Streams: s, MBps: v})
			}
			enc.Encode(Result{Case: c, Round: i + 1, Metric: "rtt", Count: 10, P50us: 100, P99us: 200})
		}
	}
	results, err := readResults(&in)
	if err != nil {
		t.Fatal(err)
	}
	sums := summarize(results)
	if got := sums["loopback"].tput[1]; got != 3000 {
		t.Errorf("loopback median = %v, want 3000", got)
	}
	var out bytes.Buffer
	writeReport(&out, sums, "2", "go1.26.8", "", true)
	for _, want := range []string{
		"| mcpmesh TUN mode (tunnel/kernel, over the veth) | 400 MB/s | 400 MB/s | 100 µs | 200 µs | 0.13 / 0.13 |",
		"| TUN mode / bare wireguard-go | 1.00 | 1.00 | ≥ 0.9 | yes |",
		"| TUN mode / Nebula | 5.00 | 5.00 | > 1 | yes |",
		// Per round 300/400, 200/390, 250/410: the median is 0.61, where
		// the ratio of the medians would be 250/400.
		"| userspace mode / TUN mode | 0.61 | 0.61 | ≥ 0.5 | yes |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
