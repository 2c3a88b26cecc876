package mcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// upstreamTransport is the proxy's HTTP/1.1 client for its loopback
// upstreams: a pool of kept-alive connections, and on each request the
// standard library's own request writer (http.Request.Write) and response
// parser (http.ReadResponse) run on the calling goroutine.
//
// Why not http.Transport: it serves each connection with two goroutines of
// its own (a writer, and a reader that always waits on the socket to spot
// a server's close early), so every call is three goroutine hand-offs and a
// wasted read on top of the request's own work. Profiles of the proxy at 64
// sessions put that near a fifth of its CPU, on a path where the proxy must
// stay cheap beside the MCP server it guards. What http.Transport gets from
// its reader goroutine, spotting connections the upstream has closed, this
// transport gets by a non-blocking peek at a connection before it is reused
// (one system call, no goroutine). It speaks plain HTTP/1.1 to one kind of
// peer, a loopback MCP server; there is no TLS, HTTP/2, proxy or redirect
// to support.
type upstreamTransport struct {
	dialer      net.Dialer
	check       func(remote string) error // on each new connection, with its peer's address (Config.CheckUpstream)
	maxIdle     int                       // idle connections kept per address
	idleTimeout time.Duration             // an idle connection older than this is closed

	mu     sync.Mutex
	idle   map[string][]*upstreamConn // by host:port, most recently used last
	closed bool
}

// upstreamConn is one kept-alive connection to an upstream.
type upstreamConn struct {
	addr     string
	conn     net.Conn
	limit    *headLimit // under br: bounds the bytes an answer's head may take
	br       *bufio.Reader
	bw       *bufio.Writer
	idleFrom time.Time
}

// maxAnswerHead bounds the status line and headers of an upstream answer
// (http.Transport's MaxResponseHeaderBytes does the same), so a broken
// upstream cannot grow the proxy's memory without end.
const maxAnswerHead = 1 << 20

// maxInterim bounds the 1xx answers before the real one (http.Transport
// allows 5), so an upstream cannot keep a call busy with them.
const maxInterim = 5

// newUpstreamConn wraps a connection for the transport.
func newUpstreamConn(addr string, c net.Conn) *upstreamConn {
	l := &headLimit{r: c, remain: -1, err: errAnswerHead}
	return &upstreamConn{addr: addr, conn: c, limit: l, br: bufio.NewReaderSize(l, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}
}

// headLimit is a reader that fails with err once remain bytes were read;
// remain < 0 means no limit (while a body is read). It bounds the head of
// a message, read through a bufio.Reader above it: an upstream's answer
// here, a caller's request in front.go.
type headLimit struct {
	r      io.Reader
	remain int64
	err    error
}

var errAnswerHead = fmt.Errorf("upstream answer head larger than %d bytes", maxAnswerHead)

func (l *headLimit) Read(p []byte) (int, error) {
	if l.remain < 0 {
		return l.r.Read(p)
	}
	if l.remain == 0 {
		return 0, l.err
	}
	if int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.r.Read(p)
	l.remain -= int64(n)
	return n, err
}

// errTransportClosed is returned after Close.
var errTransportClosed = errors.New("upstream transport closed")

func newUpstreamTransport() *upstreamTransport {
	return &upstreamTransport{
		dialer:      net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle:     256,
		idleTimeout: 90 * time.Second,
		idle:        map[string][]*upstreamConn{},
	}
}

// RoundTrip sends one request and returns the answer, whose body must be
// read to its end or closed. It never follows a redirect. A request that
// fails before any of it was written to a reused connection (the upstream
// closed it in the meantime) is sent again on a new one; a request that
// may have reached the upstream is never repeated.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return nil, fmt.Errorf("upstream: scheme %q: only http", req.URL.Scheme)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		uc, reused, err := t.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp, err := t.send(ctx, uc, req)
		if err == nil {
			return resp, nil
		}
		var nw nothingWritten
		if reused && attempt == 0 && errors.As(err, &nw) && ctx.Err() == nil && (req.Body == nil || req.GetBody != nil) {
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, fmt.Errorf("upstream: rewinding request body: %w", err)
				}
			}
			continue
		}
		return nil, err
	}
}

// nothingWritten marks an error after which the upstream cannot have
// received the whole request.
type nothingWritten struct{ error }

func (e nothingWritten) Unwrap() error { return e.error }

// send writes req on uc and reads the answer's head.
func (t *upstreamTransport) send(ctx context.Context, uc *upstreamConn, req *http.Request) (*http.Response, error) {
	// Cancelling the request's context unblocks any read or write on the
	// connection; the connection is not reused after that.
	stop := context.AfterFunc(ctx, func() { uc.conn.SetDeadline(aLongTimeAgo) })
	fail := func(err error) error {
		stop()
		uc.conn.Close()
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("upstream %s: %w", uc.addr, cerr)
		}
		return err
	}
	if err := writeRequest(uc.bw, req); err != nil {
		return nil, fail(nothingWritten{fmt.Errorf("upstream %s: writing request: %w", uc.addr, err)})
	}
	if err := uc.bw.Flush(); err != nil {
		return nil, fail(nothingWritten{fmt.Errorf("upstream %s: writing request: %w", uc.addr, err)})
	}
	for interim := 0; ; interim++ {
		if interim > maxInterim {
			return nil, fail(fmt.Errorf("upstream %s: more than %d interim (1xx) answers", uc.addr, maxInterim))
		}
		// Bytes already buffered were read under an earlier limit; a head
		// may take maxAnswerHead beyond them.
		uc.limit.remain = maxAnswerHead
		resp, err := http.ReadResponse(uc.br, req)
		uc.limit.remain = -1
		if err != nil {
			return nil, fail(fmt.Errorf("upstream %s: reading answer: %w", uc.addr, err))
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // an interim answer (103 Early Hints); the real one follows
		}
		b := &upstreamBody{t: t, uc: uc, body: resp.Body, stop: stop, reuse: !resp.Close && !req.Close}
		if resp.Body == http.NoBody {
			b.finish(true)
		} else {
			resp.Body = b
		}
		return resp, nil
	}
}

// get returns an idle connection to addr that is still open, or a new one.
func (t *upstreamTransport) get(ctx context.Context, addr string) (*upstreamConn, bool, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, false, fmt.Errorf("upstream %s: %w", addr, errTransportClosed)
		}
		conns := t.idle[addr]
		if len(conns) == 0 {
			t.mu.Unlock()
			break
		}
		uc := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		t.mu.Unlock()
		if time.Since(uc.idleFrom) < t.idleTimeout && uc.br.Buffered() == 0 && stillOpen(uc.conn) {
			return uc, true, nil
		}
		uc.conn.Close()
	}
	c, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("upstream %s: %w", addr, err)
	}
	if t.check != nil {
		// After the connection is made: it is the listener that accepted
		// it, at the address it reached, whose owner must be the right
		// one.
		if err := t.check(c.RemoteAddr().String()); err != nil {
			c.Close()
			return nil, false, fmt.Errorf("upstream %s: %w", addr, err)
		}
	}
	return newUpstreamConn(addr, c), false, nil
}

// put keeps a connection whose last answer was read to its end.
func (t *upstreamTransport) put(uc *upstreamConn) {
	uc.idleFrom = time.Now()
	t.mu.Lock()
	conns := t.idle[uc.addr]
	if t.closed || len(conns) >= t.maxIdle {
		t.mu.Unlock()
		uc.conn.Close()
		return
	}
	// The least recently used come first; drop those idle too long.
	var stale []*upstreamConn
	for len(conns) > 0 && uc.idleFrom.Sub(conns[0].idleFrom) >= t.idleTimeout {
		stale = append(stale, conns[0])
		conns = conns[1:]
	}
	t.idle[uc.addr] = append(conns, uc)
	t.mu.Unlock()
	for _, s := range stale {
		s.conn.Close()
	}
}

// Close closes the idle connections and keeps none from now on;
// connections in use are closed when their answer ends.
func (t *upstreamTransport) Close() {
	t.mu.Lock()
	t.closed = true
	idle := t.idle
	t.idle = map[string][]*upstreamConn{}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, uc := range conns {
			uc.conn.Close()
		}
	}
}

// upstreamBody is an answer's body. Read to its end, it returns the
// connection to the pool; closed before that, it closes the connection
// (draining an event stream that may never end is not an option).
type upstreamBody struct {
	t     *upstreamTransport
	uc    *upstreamConn
	body  io.ReadCloser
	stop  func() bool // stops the context's hook; false once it has run
	reuse bool
	done  atomic.Bool
	eof   atomic.Bool // done by reaching the end, not by Close or an error
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		if b.eof.Load() {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("upstream %s: read after close: %w", b.uc.addr, net.ErrClosed)
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the answer once: the connection goes back to the pool only
// after a clean end of a reusable answer whose context was not cancelled.
func (b *upstreamBody) finish(eof bool) {
	if b.done.Swap(true) {
		return
	}
	b.eof.Store(eof)
	if b.stop() && eof && b.reuse {
		b.t.put(b.uc)
		return
	}
	b.uc.conn.Close()
}

// writeRequest writes req as HTTP/1.1 with the body that its
// ContentLength declares, head and body in one buffer. It is what
// Request.Write does for the requests the proxy makes, without what they
// never need (URL forms, trailers, a default User-Agent, chunked bodies):
// on a vCPU just woken, Request.Write's generality cost the call a few µs.
// A header name or value that could break the framing (a tool name with
// a line break, sent as Mcp-Name) is refused, not sent; Request.Write
// would have sent it with the line break made a space.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	if req.Body != nil {
		defer req.Body.Close() // as Request.Write does
	}
	if req.ContentLength < 0 || req.ContentLength > 0 && req.Body == nil {
		return fmt.Errorf("request body of unknown length (%d)", req.ContentLength)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("invalid Host %q", host)
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid value of header %s", k)
			}
		}
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue // the framing is this function's to say, however the key is spelt
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	if req.ContentLength > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if req.ContentLength == 0 {
		return nil
	}
	n, err := io.Copy(bw, io.LimitReader(req.Body, req.ContentLength))
	if err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if n != req.ContentLength {
		return fmt.Errorf("request body: %d bytes, declared %d", n, req.ContentLength)
	}
	return nil
}
