package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// cmdClient is one client process: -count light nodes named PREFIX00000…,
// enrolled -concurrency at a time, driven by requests on stdin. It exits on
// quit, when stdin closes (the driver is gone), or after -lifetime.
func cmdClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	url := fs.String("url", "", "coordinator URL, https://127.0.0.1:PORT")
	token := fs.String("token", "", "reusable join token")
	prefix := fs.String("prefix", "n", "node name prefix")
	count := fs.Int("count", 100, "light nodes in this process")
	conc := fs.Int("concurrency", 16, "enrollments in flight at once")
	lifetime := fs.Duration("lifetime", time.Hour, "exit after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *token == "" || *count < 1 || *conc < 1 {
		return errors.New("-url, -token, -count ≥ 1 and -concurrency ≥ 1 are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *lifetime)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &client{url: *url, token: *token, prefix: *prefix, count: *count, conc: *conc}
	defer c.close()
	return c.serve(ctx, os.Stdin, os.Stdout)
}

// client holds one process's nodes. Requests come one at a time.
type client struct {
	url, token, prefix string
	count, conc        int

	nodes  []*meshtest.LightNode
	cancel context.CancelFunc // stops the streams
	runs   sync.WaitGroup

	armed *armed
}

// armed is a condition being watched since an arm request.
type armed struct {
	base map[*meshtest.LightNode][2]uint64
	done chan struct{}
	last time.Time
	err  error
}

// serve answers requests until quit, EOF or ctx's end.
func (c *client) serve(ctx context.Context, in io.Reader, out io.Writer) error {
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()
	enc := json.NewEncoder(out)
	for {
		var line []byte
		select {
		case <-ctx.Done():
			return fmt.Errorf("client %s: %w", c.prefix, ctx.Err())
		case err := <-readErr:
			if err != nil {
				return fmt.Errorf("client %s: read requests: %w", c.prefix, err)
			}
			return nil // the driver closed our stdin
		case line = <-lines:
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			return fmt.Errorf("client %s: request %q: %w", c.prefix, line, err)
		}
		rep := c.handle(ctx, req)
		rep.Nodes = len(c.nodes)
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("client %s: write reply: %w", c.prefix, err)
		}
		if req.Op == opQuit {
			return nil
		}
	}
}

func (c *client) handle(ctx context.Context, req request) reply {
	errReply := func(err error) reply { return reply{Err: err.Error()} }
	switch req.Op {
	case opEnroll:
		t0 := time.Now()
		if err := c.enroll(ctx, req.Timeout); err != nil {
			return errReply(err)
		}
		return reply{Seconds: time.Since(t0).Seconds()}
	case opStream:
		c.stream(ctx)
		return reply{}
	case opArm:
		if err := c.arm(ctx, req); err != nil {
			return errReply(err)
		}
		return reply{}
	case opWait:
		a := c.armed
		if a == nil {
			return errReply(errors.New("wait without arm"))
		}
		<-a.done // bounded by the arm request's timeout
		c.armed = nil
		if a.err != nil {
			return errReply(a.err)
		}
		msgs, total, lo, hi := byteSpread(c.nodes, a.base)
		return reply{Last: a.last.UnixNano(), Messages: msgs, Bytes: total, MinBytes: lo, MaxBytes: hi}
	case opStats:
		var r reply
		for _, l := range c.nodes {
			m, b := l.Client.Stats()
			r.Messages += m
			r.Bytes += b
		}
		return r
	case opQuit:
		c.close()
		return reply{}
	}
	return errReply(fmt.Errorf("unknown op %q", req.Op))
}

// enroll enrolls every node, c.conc at a time, and stops at the first error.
func (c *client) enroll(ctx context.Context, timeout time.Duration) error {
	if c.nodes != nil {
		return errors.New("already enrolled")
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nodes := make([]*meshtest.LightNode, c.count)
	sem := make(chan struct{}, c.conc)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := range nodes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("%s%05d", c.prefix, i)
			l, err := meshtest.EnrollLight(ctx, c.url, c.token, name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("enroll %s: %w", name, err)
				}
				cancel()
				return
			}
			nodes[i] = l
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("enroll: %w", ctx.Err())
	}
	if firstErr != nil {
		for _, l := range nodes {
			if l != nil {
				l.Client.Close()
			}
		}
		return firstErr
	}
	c.nodes = nodes
	return nil
}

// stream starts every node's netmap stream; they run until quit.
func (c *client) stream(ctx context.Context) {
	if c.cancel != nil {
		return
	}
	ctx, c.cancel = context.WithCancel(ctx)
	for _, l := range c.nodes {
		c.runs.Add(1)
		go func() { defer c.runs.Done(); _ = l.Run(ctx) }()
	}
}

// arm records every node's counters and version and starts watching for
// the condition in the background.
func (c *client) arm(ctx context.Context, req request) error {
	if c.armed != nil {
		return errors.New("already armed")
	}
	versions := make(map[*meshtest.LightNode]uint64, len(c.nodes))
	for _, l := range c.nodes {
		versions[l] = l.Version()
	}
	ok, err := condFor(req.Until, req.Peers, versions)
	if err != nil {
		return err
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	a := &armed{base: statsOf(c.nodes), done: make(chan struct{})}
	c.armed = a
	wctx, cancel := context.WithTimeout(ctx, timeout)
	go func() {
		defer close(a.done)
		defer cancel()
		a.last, a.err = watch(wctx, c.nodes, ok, a.base)
	}()
	return nil
}

// close stops the streams and waits for them (bounded: Run returns when
// its context ends).
func (c *client) close() {
	if c.cancel != nil {
		c.cancel()
		c.runs.Wait()
		c.cancel = nil
	}
	for _, l := range c.nodes {
		l.Client.Close()
	}
}
