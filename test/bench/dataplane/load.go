package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The wire protocol between client and server: the client's first byte
// picks the mode. In sink mode the server counts bytes until EOF and answers
// the count as 8 big-endian bytes, so the client's clock stops only when
// every byte has arrived. In echo mode the server sends back what it reads.
const (
	opSink = 'S'
	opEcho = 'E'
)

// Result is one measurement, printed as one JSON line.
type Result struct {
	Case    string  `json:"case"`
	Round   int     `json:"round,omitempty"`
	Metric  string  `json:"metric"` // "tput" or "rtt"
	Streams int     `json:"streams,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	MBps    float64 `json:"mbps,omitempty"`
	Count   int     `json:"count,omitempty"`
	Size    int     `json:"size,omitempty"`
	P50us   float64 `json:"p50_us,omitempty"`
	P99us   float64 `json:"p99_us,omitempty"`
}

func printResult(r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}

// dialFunc opens one connection to the server under test.
type dialFunc func(ctx context.Context) (net.Conn, error)

// serve answers sink and echo connections on l until ctx ends, then closes
// l and every open connection and waits for their goroutines.
func serve(ctx context.Context, l net.Listener) {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			break
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			handle(c)
		}()
	}
	l.Close()
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
}

// handle serves one connection; errors end it, the client reports them.
func handle(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	// Plain read loops rather than io.Copy: *net.TCPConn would pick
	// splice or io.Discard's small buffer, and the gVisor conns neither,
	// so the paths would not be read the same way.
	switch op[0] {
	case opSink:
		buf := make([]byte, 256<<10)
		var n int64
		for {
			r, err := c.Read(buf)
			n += int64(r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(n))
		c.Write(ack[:])
	case opEcho:
		buf := make([]byte, 64<<10)
		for {
			r, err := c.Read(buf)
			if r > 0 {
				if _, werr := c.Write(buf[:r]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// bulk sends up to total bytes, split evenly over streams connections, for
// at most d, and returns the rate at which the server acknowledged them.
// Every connection is open before the clock starts.
func bulk(ctx context.Context, dial dialFunc, streams int, total int64, d time.Duration) (Result, error) {
	if streams < 1 || total < int64(streams) {
		return Result{}, fmt.Errorf("bulk: %d streams for %d bytes", streams, total)
	}
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dial(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("bulk: dial: %w", err)
		}
		conns = append(conns, c)
	}
	quota := total / int64(streams)
	start := time.Now()
	stopAt := start.Add(d)
	type sent struct {
		n   int64
		err error
	}
	done := make(chan sent, streams)
	for _, c := range conns {
		go func() {
			n, err := sendAndAck(c, quota, stopAt)
			done <- sent{n, err}
		}()
	}
	var got int64
	var errs []error
	for range conns {
		s := <-done
		got += s.n
		errs = append(errs, s.err)
	}
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return Result{}, fmt.Errorf("bulk: %w", err)
	}
	if got == 0 {
		return Result{}, errors.New("bulk: no byte carried")
	}
	return Result{
		Metric:  "tput",
		Streams: streams,
		Bytes:   got,
		Seconds: el.Seconds(),
		MBps:    float64(got) / 1e6 / el.Seconds(),
	}, nil
}

// sendAndAck writes up to quota bytes on c until stopAt, half-closes it and
// checks that the server counted exactly what was sent. A transfer that has
// not finished 30 s after stopAt fails on its deadline.
func sendAndAck(c net.Conn, quota int64, stopAt time.Time) (int64, error) {
	c.SetDeadline(stopAt.Add(30 * time.Second))
	buf := make([]byte, 128<<10)
	buf[0] = opSink
	var n int64 = -1 // the op byte is not payload
	for n < quota && time.Now().Before(stopAt) {
		b := buf
		if rest := quota - n; rest < int64(len(b)) {
			b = b[:rest]
		}
		w, err := c.Write(b)
		n += int64(w)
		if err != nil {
			return 0, fmt.Errorf("send: %w", err)
		}
		buf[0] = 0
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return 0, fmt.Errorf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, fmt.Errorf("half-close: %w", err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("read the server's count: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != n {
		return 0, fmt.Errorf("server counted %d bytes, client sent %d", got, n)
	}
	return n, nil
}

// rtt runs up to count sequential round trips of size bytes on one
// connection, for at most d, after a short warm-up, and reports p50 and p99.
func rtt(ctx context.Context, dial dialFunc, count, size int, d time.Duration) (Result, error) {
	if count < 1 || size < 1 {
		return Result{}, fmt.Errorf("rtt: count %d, size %d", count, size)
	}
	c, err := dial(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("rtt: dial: %w", err)
	}
	defer c.Close()
	stopAt := time.Now().Add(d)
	c.SetDeadline(stopAt.Add(10 * time.Second))
	if _, err := c.Write([]byte{opEcho}); err != nil {
		return Result{}, fmt.Errorf("rtt: %w", err)
	}
	msg, got := make([]byte, size), make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	const warmup = 20
	times := make([]time.Duration, 0, count)
	for i := 0; len(times) < count && time.Now().Before(stopAt); i++ {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return Result{}, fmt.Errorf("rtt: send: %w", err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return Result{}, fmt.Errorf("rtt: read echo: %w", err)
		}
		if i >= warmup {
			times = append(times, time.Since(t0))
		}
	}
	if len(times) == 0 {
		return Result{}, errors.New("rtt: no round trip measured")
	}
	slices.Sort(times)
	return Result{
		Metric: "rtt",
		Count:  len(times),
		Size:   size,
		P50us:  micros(percentile(times, 0.50)),
		P99us:  micros(percentile(times, 0.99)),
	}, nil
}

// percentile returns the nearest-rank p-quantile of sorted ts.
func percentile(ts []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(ts))+0.5) - 1
	return ts[min(max(i, 0), len(ts)-1)]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// stopContext ends on SIGINT or SIGTERM, after lifetime, and, if watchStdin,
// when stdin reaches EOF.
func stopContext(lifetime time.Duration, watchStdin bool) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancelT := context.WithTimeout(ctx, lifetime)
	if watchStdin {
		go func() { // ends with the process: a blocked read of stdin cannot be woken
			io.Copy(io.Discard, os.Stdin)
			cancelT()
		}()
	}
	return ctx, func() { cancelT(); cancel() }
}

// loadFlags are what client, rtt and userspace share.
type loadFlags struct {
	caseName string
	round    int
	bytes    int64
	duration time.Duration
	count    int
	size     int
}

func (f *loadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.caseName, "case", "", "case name copied into the result")
	fs.IntVar(&f.round, "round", 0, "round number copied into the result")
	fs.Int64Var(&f.bytes, "bytes", 256<<20, "bytes to move in one transfer (all streams together)")
	fs.DurationVar(&f.duration, "duration", 3*time.Second, "longest a transfer or an RTT series runs")
	fs.IntVar(&f.count, "count", 2000, "round trips to time")
	fs.IntVar(&f.size, "size", 64, "bytes of each echo request")
}

func (f *loadFlags) label(r Result) Result {
	r.Case, r.Round = f.caseName, f.round
	return r
}

func tcpDial(addr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
}

func cmdServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5201", "TCP address to serve on")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "stop after this long")
	watchStdin := fs.Bool("stdin", false, "also stop when stdin closes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := stopContext(*lifetime, *watchStdin)
	defer cancel()
	fmt.Printf("ready %s\n", l.Addr())
	serve(ctx, l)
	return nil
}

func cmdClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var lf loadFlags
	lf.register(fs)
	addr := fs.String("addr", "127.0.0.1:5201", "server address")
	streams := fs.Int("streams", 1, "parallel TCP streams")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := bulk(context.Background(), tcpDial(*addr), *streams, lf.bytes, lf.duration)
	if err != nil {
		return fmt.Errorf("%s: %w", *addr, err)
	}
	return printResult(lf.label(r))
}

func cmdRTT(args []string) error {
	fs := flag.NewFlagSet("rtt", flag.ContinueOnError)
	var lf loadFlags
	lf.register(fs)
	addr := fs.String("addr", "127.0.0.1:5201", "server address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := rtt(context.Background(), tcpDial(*addr), lf.count, lf.size, lf.duration)
	if err != nil {
		return fmt.Errorf("%s: %w", *addr, err)
	}
	return printResult(lf.label(r))
}
