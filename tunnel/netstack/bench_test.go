package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// benchBytes is what one iteration moves over each path.
const benchBytes = 64 << 20

// BenchmarkTCPThroughput moves benchBytes over one TCP stream through two
// tunnels, then over plain loopback TCP in the same run, and reports both
// rates and their ratio: the ratio is the figure to compare across machines.
func BenchmarkTCPThroughput(b *testing.B) {
	x, y := newNode(b, 1), newNode(b, 2)
	mustSetPeers(b, x, y.peer())
	mustSetPeers(b, y, x.peer())
	tl, err := y.ListenTCP(5001)
	if err != nil {
		b.Fatal(err)
	}
	defer tl.Close()
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ll.Close()

	tunnelDial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return x.DialContext(ctx, "tcp", netip.AddrPortFrom(y.v4, 5001).String())
	}
	loopDial := func() (net.Conn, error) { return net.Dial("tcp", ll.Addr().String()) }

	var tunnelTime, loopTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := transfer(tl, tunnelDial)
		if err != nil {
			b.Fatalf("through tunnels: %v", err)
		}
		tunnelTime += d
		d, err = transfer(ll, loopDial)
		if err != nil {
			b.Fatalf("plain loopback: %v", err)
		}
		loopTime += d
	}
	b.StopTimer()
	mb := float64(benchBytes) * float64(b.N) / 1e6
	b.ReportMetric(mb/tunnelTime.Seconds(), "tunnel-MB/s")
	b.ReportMetric(mb/loopTime.Seconds(), "loopback-MB/s")
	b.ReportMetric(loopTime.Seconds()/tunnelTime.Seconds(), "tunnel/loopback")
}

// transfer sends benchBytes from a dialed connection to one accepted on l
// and returns the time until the receiver has read them all.
func transfer(l net.Listener, dial func() (net.Conn, error)) (time.Duration, error) {
	got := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		if err == nil && n != benchBytes {
			err = fmt.Errorf("received %d bytes, want %d", n, benchBytes)
		}
		got <- err
	}()
	c, err := dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := 0; sent < benchBytes; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return 0, err
	}
	if err := <-got; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
