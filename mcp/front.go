package mcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// front is the HTTP/1.1 server in front of the proxy, on the mesh address.
//
// It is ours rather than net/http's Server for one measured reason: for
// every request, net/http starts a goroutine that reads the connection in
// the background to notice a client going away, and stops it again when
// the answer is written. On a call that takes a few hundred microseconds
// that costs two goroutine hand-offs, a wasted read and up to four futex
// wake-ups of other threads, which on the two cores of a small host take
// CPU from the MCP server itself (BENCHMARKS.md, "MCP proxy alone").
// front watches a connection only once a request has run for watchAfter,
// or streams its answer, which a quick tools/call never does. One ticker
// per front finds the requests that ran that long (watchdog), rather than
// a timer per request: a new timer due sooner than any other makes the Go
// runtime wake a second thread to mind it, about 5 µs of CPU a serial
// tools/call in profiles (BENCHMARKS.md).
//
// Everything else that touches outside bytes is the standard library's:
// http.ReadRequest parses the request line, the headers (textproto checks
// every name and value) and the body's framing (chunked, Content-Length,
// and their conflicts), and http.Header.Write writes the answer's headers
// (it drops invalid names and turns line breaks in values into spaces).
// front adds the limits (header size, header and whole-request timeouts,
// idle connections, a write that makes no progress for a minute), the
// framing of the answer (Content-Length when the handler is done before
// its answer reaches 32 KiB, chunked after a Flush or beyond that), and
// keep-alive. As in net/http, what a handler left of a body is read (up to
// 256 KiB) before the answer, and a failed write cancels the request.
type front struct {
	handler           http.Handler
	log               *slog.Logger
	readHeaderTimeout time.Duration // headers of a request, and a new connection's first byte
	readTimeout       time.Duration // a whole request, its body included (0: none)
	idleTimeout       time.Duration // between requests
	writeTimeout      time.Duration // a write to the client that makes no progress
	maxHeaderBytes    int
	watchAfter        time.Duration // a handler runs this long before its connection is watched

	mu       sync.Mutex
	closed   bool
	lns      map[net.Listener]struct{}
	conns    map[*frontConn]struct{}
	watching bool          // the watchdog runs (while there are connections)
	stop     chan struct{} // closed by close: the watchdog returns at once
}

// frontBufferLimit is how much of an answer front holds to send it with a
// Content-Length; a longer answer goes out chunked.
const frontBufferLimit = 32 << 10

// maxUnreadBody is how much of a body the handler left unread front reads
// and discards to keep the connection; a longer one closes it.
const maxUnreadBody = 256 << 10

// aLongTimeAgo is a deadline that makes a blocked read or write return at
// once (a watch ending here, a cancelled upstream call in upstream.go).
var aLongTimeAgo = time.Unix(1, 0)

func newFront(h http.Handler, log *slog.Logger, readTimeout time.Duration) *front {
	return &front{
		handler:           h,
		log:               log,
		readHeaderTimeout: 10 * time.Second,
		readTimeout:       readTimeout,
		idleTimeout:       2 * time.Minute,
		writeTimeout:      time.Minute,
		maxHeaderBytes:    64 << 10,
		watchAfter:        100 * time.Millisecond,
		lns:               map[net.Listener]struct{}{},
		conns:             map[*frontConn]struct{}{},
		stop:              make(chan struct{}),
	}
}

// serve accepts connections on ln until close, and answers
// http.ErrServerClosed then, as net/http's Server does.
func (f *front) serve(ln net.Listener) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	f.lns[ln] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.lns, ln)
		f.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.isClosed() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors (EMFILE, ENFILE), a connection reset
			// before it was accepted, and the like pass: wait and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.log.Warn("mcp: accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		fc := newFrontConn(f, c)
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		f.conns[fc] = struct{}{}
		if !f.watching {
			f.watching = true
			go f.watchdog()
		}
		f.mu.Unlock()
		go fc.serve()
	}
}

// watchdog starts the watch of each request that has run for watchAfter,
// looking every half of it, for as long as the front has connections. A
// request is watched between watchAfter and one and a half times it.
func (f *front) watchdog() {
	t := time.NewTicker(max(f.watchAfter/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-f.stop:
			f.mu.Lock()
			f.watching = false
			f.mu.Unlock()
			return
		}
		now := time.Now()
		f.mu.Lock()
		if len(f.conns) == 0 || f.closed {
			f.watching = false
			f.mu.Unlock()
			return
		}
		for fc := range f.conns {
			fc.watchIfRunSince(now.Add(-f.watchAfter))
		}
		f.mu.Unlock()
	}
}

func (f *front) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// close stops every serve, closes every connection, and cancels the
// requests in progress, SSE streams included.
func (f *front) close() error {
	f.mu.Lock()
	if !f.closed {
		close(f.stop)
	}
	f.closed = true
	lns := make([]net.Listener, 0, len(f.lns))
	for ln := range f.lns {
		lns = append(lns, ln)
	}
	conns := make([]*frontConn, 0, len(f.conns))
	for fc := range f.conns {
		conns = append(conns, fc)
	}
	f.mu.Unlock()
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, fc := range conns {
		fc.abort()
	}
	return errors.Join(errs...)
}

// frontConn is one client connection, serving its requests one at a time.
type frontConn struct {
	f      *front
	c      net.Conn
	lim    *headLimit // under br: bounds what a request's headers may take
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string

	mu        sync.Mutex
	cancel    context.CancelFunc // the request in progress, nil between requests
	since     time.Time          // when the request in progress began
	bodyDone  bool               // its body was read to the end
	wantWatch bool               // it ran past watchAfter, or flushed its answer
	done      bool               // its handler returned
	watch     chan struct{}      // closed when the watcher returns; nil when none runs
	gone      bool               // the watcher saw the client leave
}

func newFrontConn(f *front, c net.Conn) *frontConn {
	fc := &frontConn{f: f, c: c, remote: c.RemoteAddr().String()}
	fc.lim = &headLimit{r: c, remain: -1, err: errHeaderTooLarge}
	fc.br = bufio.NewReader(fc.lim)
	fc.bw = bufio.NewWriter(clientWriter{fc})
	return fc
}

// clientWriter writes to the client with a deadline that each write
// renews, so a client that stops reading cannot hold the request (and its
// upstream) for good while a stream that moves lives on. A failed write
// means the client is gone: the request is cancelled, as net/http does.
type clientWriter struct{ fc *frontConn }

func (w clientWriter) Write(p []byte) (int, error) {
	fc := w.fc
	fc.c.SetWriteDeadline(time.Now().Add(fc.f.writeTimeout))
	n, err := fc.c.Write(p)
	if err != nil {
		fc.mu.Lock()
		fc.leftLocked()
		fc.mu.Unlock()
	}
	return n, err
}

// leftLocked records that the client is gone and cancels its request in
// progress, if any; fc.mu is held.
func (fc *frontConn) leftLocked() {
	fc.gone = true
	if fc.cancel != nil {
		fc.cancel()
	}
}

var errHeaderTooLarge = errors.New("request headers too large")

func (fc *frontConn) abort() {
	fc.c.Close()
	fc.mu.Lock()
	if fc.cancel != nil {
		fc.cancel()
	}
	fc.mu.Unlock()
}

func (fc *frontConn) serve() {
	defer func() {
		fc.c.Close()
		fc.f.mu.Lock()
		delete(fc.f.conns, fc)
		fc.f.mu.Unlock()
	}()
	for first := true; ; first = false {
		wait := fc.f.idleTimeout
		if first {
			wait = fc.f.readHeaderTimeout
		}
		fc.c.SetReadDeadline(time.Now().Add(wait))
		// What the headers may take counts from here: the first byte's read
		// may fill the buffer. The request line comes on top, as in net/http.
		fc.lim.remain = int64(fc.f.maxHeaderBytes) + 4096
		if _, err := fc.br.Peek(1); err != nil {
			return // idle too long, or the client left
		}
		start := time.Now()
		fc.c.SetReadDeadline(start.Add(fc.f.readHeaderTimeout))
		req, err := http.ReadRequest(fc.br)
		over := fc.lim.remain == 0
		fc.lim.remain = -1
		if err != nil {
			var ne net.Error
			switch {
			case over:
				fc.refuse(http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
			case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				// Too slow, or gone: nothing to answer.
			default:
				fc.refuse(http.StatusBadRequest, "malformed HTTP request")
			}
			fc.f.log.Debug("mcp: bad request", "remote", fc.remote, "err", err)
			return
		}
		if msg, status := checkRequest(req); status != 0 {
			fc.refuse(status, msg)
			return
		}
		var deadline time.Time
		if fc.f.readTimeout > 0 {
			deadline = start.Add(fc.f.readTimeout)
		}
		fc.c.SetReadDeadline(deadline)
		if !fc.handle(req) {
			return
		}
	}
}

// checkRequest is what net/http's server checks beyond ReadRequest: the
// HTTP version, the Host header, header names (textproto lets a name with
// a space through), and Expect. (ReadRequest itself refuses a repeated
// Host header, before it removes the header; the proxy sends its own Host
// upstream.)
func checkRequest(req *http.Request) (string, int) {
	if req.ProtoMajor != 1 {
		return "unsupported protocol version", http.StatusHTTPVersionNotSupported
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != "CONNECT" {
		return "missing required Host header", http.StatusBadRequest
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return "malformed Host header", http.StatusBadRequest
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return "invalid header name", http.StatusBadRequest
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return "invalid header value", http.StatusBadRequest
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return "unsupported Expect header", http.StatusExpectationFailed
	}
	return "", 0
}

// refuse answers a request front cannot serve, and the connection closes.
func (fc *frontConn) refuse(status int, msg string) {
	fc.c.SetWriteDeadline(time.Now().Add(fc.f.readHeaderTimeout))
	fmt.Fprintf(fc.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(msg), msg)
	fc.bw.Flush()
}

// handle runs the handler for req and answers; it reports whether the
// connection may carry another request.
func (fc *frontConn) handle(req *http.Request) (keep bool) {
	ctx, cancel := context.WithCancel(context.Background())
	req = req.WithContext(ctx)
	req.RemoteAddr = fc.remote
	body := &frontBody{rc: req.Body, fc: fc}
	req.Body = body
	w := &frontResponse{fc: fc, req: req, body: body, header: make(http.Header, 4), contentLength: -1}

	fc.mu.Lock()
	fc.cancel, fc.bodyDone, fc.wantWatch, fc.done, fc.gone = cancel, req.ContentLength == 0, false, false, false
	fc.since = time.Now()
	fc.mu.Unlock()
	// A client that asked may send the body once told to: when the
	// handler first reads it, as net/http does, so that a request refused
	// unread (too large, no such service) never has its body sent.
	body.continueOwed = req.ContentLength != 0 && req.ProtoAtLeast(1, 1) && strings.EqualFold(req.Header.Get("Expect"), "100-continue")

	defer func() {
		if v := recover(); v != nil {
			keep = false
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				fc.f.log.Error("mcp: panic serving a request", "remote", fc.remote, "panic", v, "stack", string(buf))
			}
			fc.stopWatch()
			cancel()
		}
	}()
	fc.f.handler.ServeHTTP(w, req)
	gone := fc.stopWatch()
	keep = w.finish() && !gone && !req.Close // finish read what the handler left of the body
	cancel()
	fc.mu.Lock()
	fc.cancel = nil
	fc.mu.Unlock()
	return keep
}

// watchIfRunSince starts the watch if the request in progress began
// before t; f.mu is held (the watchdog's).
func (fc *frontConn) watchIfRunSince(t time.Time) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	// Checked and started in one hold of fc.mu: the request checked is
	// the one watched, not a next one begun in between.
	if fc.cancel != nil && !fc.done && fc.since.Before(t) {
		fc.startWatchLocked(true)
	}
}

// startWatch starts reading the connection in the background to notice the
// client leaving, once the request's body is read to its end (the reader
// is the connection's) and the request has run long enough or streams.
func (fc *frontConn) startWatch(want bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.startWatchLocked(want)
}

// startWatchLocked is startWatch with fc.mu held.
func (fc *frontConn) startWatchLocked(want bool) {
	fc.wantWatch = fc.wantWatch || want
	if !fc.wantWatch || !fc.bodyDone || fc.done || fc.watch != nil {
		return
	}
	done := make(chan struct{})
	fc.watch = done
	fc.c.SetReadDeadline(time.Time{}) // a stream may outlive the request's deadline
	go func() {
		defer close(done)
		_, err := fc.br.Peek(1) // a pipelined request stays in the buffer
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if err != nil && !fc.done {
			fc.leftLocked()
		}
	}()
}

// stopWatch ends the watch, if one runs, and reports whether the client left.
func (fc *frontConn) stopWatch() bool {
	fc.mu.Lock()
	fc.done = true
	done := fc.watch
	fc.watch = nil
	fc.mu.Unlock()
	if done != nil {
		fc.c.SetReadDeadline(aLongTimeAgo)
		<-done
		fc.c.SetReadDeadline(time.Time{})
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.gone
}

// frontBody is a request's body; it tells its connection when the body has
// been read to its end, after which the connection may be watched.
type frontBody struct {
	rc           io.ReadCloser
	fc           *frontConn
	eof          bool
	continueOwed bool // the client waits for 100 Continue before it sends the body
}

func (b *frontBody) Read(p []byte) (int, error) {
	if b.continueOwed {
		b.continueOwed = false
		b.fc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := b.fc.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) && !b.eof {
		b.eof = true
		b.fc.mu.Lock()
		b.fc.bodyDone = true
		b.fc.mu.Unlock()
		b.fc.startWatch(false)
	}
	return n, err
}

// Close leaves the rest of the body where it is: front reads at most
// maxUnreadBody of it before it answers, or closes the connection.
func (b *frontBody) Close() error { return nil }

// drain reads what is left of the body, within the request's deadline, and
// reports whether it ended within maxUnreadBody, so that the connection can
// carry another request and be watched meanwhile. A body the client was
// never told to send (Expect: 100-continue) is not waited for.
func (b *frontBody) drain() bool {
	if b.eof {
		return true
	}
	if b.continueOwed {
		// Never told to send it, the client may not: the connection
		// cannot tell where the next request begins, and closes after
		// the answer. A 100 Continue can no longer come before it.
		b.continueOwed = false
		return false
	}
	n, err := io.CopyN(io.Discard, b, maxUnreadBody+1)
	return n <= maxUnreadBody && errors.Is(err, io.EOF)
}

// frontResponse is the http.ResponseWriter (and http.Flusher) of one request.
type frontResponse struct {
	fc            *frontConn
	req           *http.Request
	body          *frontBody
	header        http.Header
	status        int
	wroteHeader   bool  // WriteHeader was called
	sentHeader    bool  // the headers are in the connection's buffer
	chunked       bool  // the body goes out in chunks
	closeAfter    bool  // the connection closes after this answer
	contentLength int64 // the handler's Content-Length, or -1
	written       int64
	buf           []byte // body held back until Flush, finish, or frontBufferLimit
	err           error  // the first write error: the connection is done
}

func (w *frontResponse) Header() http.Header { return w.header }

func (w *frontResponse) WriteHeader(code int) {
	if w.wroteHeader || code < 200 || code > 999 {
		return // 1xx answers are not sent; repeated calls are ignored, as net/http does
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			w.header.Del("Content-Length")
		} else {
			w.contentLength = n
		}
	}
}

func (w *frontResponse) bodyAllowed() bool {
	return w.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *frontResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p)) // the length a GET would have had
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sentHeader {
		if len(w.buf)+len(p) <= frontBufferLimit {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.sendHeader(false)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends what was written so far; the answer goes on in chunks.
func (w *frontResponse) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error, for http.ResponseController.
func (w *frontResponse) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.sendHeader(false)
	}
	if w.err == nil {
		w.err = w.fc.bw.Flush()
	}
	w.fc.startWatch(true)
	return w.err
}

// sendHeader puts the status line, the headers and the body held so far
// into the connection's buffer. final: the handler is done, so the body's
// length is known.
func (w *frontResponse) sendHeader(final bool) {
	w.sentHeader = true
	// What the handler left of the body is read before the answer, as
	// net/http does: a client may send its whole body before it reads,
	// and a stream is watched for the client leaving only past the body.
	if !w.body.drain() {
		w.closeAfter = true
	}
	h := w.header
	if v := h.Get("Connection"); strings.EqualFold(v, "close") {
		w.closeAfter = true
	}
	for _, k := range [...]string{"Transfer-Encoding", "Connection", "Keep-Alive", "Trailer", "Upgrade"} {
		delete(h, k) // the framing is front's to say
	}
	if w.contentLength < 0 || !w.bodyAllowed() && w.req.Method != http.MethodHead {
		// Set after WriteHeader, or on an answer without a body: not the
		// length of what goes out.
		delete(h, "Content-Length")
		if !w.bodyAllowed() && w.req.Method != http.MethodHead {
			w.contentLength = -1
		}
	}
	if !w.req.ProtoAtLeast(1, 1) || w.req.Close {
		w.closeAfter = true
	}
	switch {
	case w.contentLength >= 0:
	case final && w.req.Method == http.MethodHead && w.written > 0:
		h.Set("Content-Length", strconv.FormatInt(w.written, 10))
	case !w.bodyAllowed():
	case final:
		h.Set("Content-Length", strconv.Itoa(len(w.buf)))
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	default:
		w.closeAfter = true // HTTP/1.0 without a length: the end of the body is the end of the connection
	}
	if w.closeAfter {
		h.Set("Connection", "close")
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	bw := w.fc.bw
	text := http.StatusText(w.status)
	if text == "" {
		text = "status code " + strconv.Itoa(w.status)
	}
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(w.status))
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
	writeFields(bw, h)
	bw.WriteString("\r\n")
	held := w.buf
	w.buf = nil
	if len(held) > 0 {
		w.writeBody(held)
	}
}

// writeFields writes an answer's header fields as Header.Write does (a
// name that is not a valid field name is dropped, a line break in a value
// becomes a space) but without its sorting: the order of different fields
// means nothing in HTTP, and sorting cost a call a few µs on a vCPU just
// woken.
func writeFields(bw *bufio.Writer, h http.Header) {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(strings.Trim(v, " \t"))
			bw.WriteString("\r\n")
		}
	}
}

func (w *frontResponse) writeBody(p []byte) {
	if w.err != nil || len(p) == 0 {
		return
	}
	bw := w.fc.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, w.err = bw.WriteString("\r\n")
		return
	}
	_, w.err = bw.Write(p)
}

// finish ends the answer after the handler returned and reports whether
// the connection may carry another request.
func (w *frontResponse) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.sendHeader(true)
	} else if w.chunked && w.err == nil {
		_, w.err = w.fc.bw.WriteString("0\r\n\r\n")
	}
	if w.contentLength >= 0 && w.bodyAllowed() && w.written != w.contentLength && w.err == nil {
		w.closeAfter = true // the client would read the next answer as this one's body
	}
	if w.err == nil {
		w.err = w.fc.bw.Flush()
	}
	return w.err == nil && !w.closeAfter
}
