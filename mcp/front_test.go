package mcp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startFront serves h with front on a loopback port, with timeouts short
// enough for tests, and returns its address.
func startFront(t testing.TB, h http.Handler, tune func(*front)) (string, *front) {
	t.Helper()
	f := newFront(h, slog.New(slog.DiscardHandler), 2*time.Second)
	f.readHeaderTimeout = time.Second
	f.idleTimeout = time.Second
	f.maxHeaderBytes = 4 << 10
	f.watchAfter = 20 * time.Millisecond
	if tune != nil {
		tune(f)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.serve(ln) }()
	t.Cleanup(func() {
		f.close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), f
}

// rawConn is a client that writes bytes as they are and reads answers with
// the standard library's parser, as an attacker on the mesh would talk.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// answer reads one answer (to a request of method) and its whole body.
func (r *rawConn) answer(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection within 5 s,
// after whatever it still sent.
func (r *rawConn) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, io.LimitReader(r.br, 1<<20))
	return err == nil || isReset(err)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

const getReq = "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

func echoPath() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
}

func TestFrontKeepsConnectionsAliveAndAnswersInOrder(t *testing.T) {
	var remotes atomic.Value
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remotes.Store(r.RemoteAddr)
		echoPath().ServeHTTP(w, r)
	}), nil)
	c := dialRaw(t, addr)
	// Two requests pipelined in one write, then a third after the answers.
	c.send("POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /b HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n")
	for _, want := range []string{"POST /a abc", "POST /b de"} {
		resp, body := c.answer("POST")
		if resp.StatusCode != 200 || body != want || resp.ContentLength != int64(len(want)) || resp.Close {
			t.Fatalf("answer %q (status %d, length %d, close %v), want %q with its length, kept alive", body, resp.StatusCode, resp.ContentLength, resp.Close, want)
		}
		if resp.Header.Get("Date") == "" {
			t.Error("no Date header")
		}
	}
	c.send(getReq)
	if _, body := c.answer("GET"); body != "GET /x " {
		t.Fatalf("third answer %q", body)
	}
	if got := remotes.Load(); got != c.c.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, want the client's %v", got, c.c.LocalAddr())
	}
}

func TestFrontStreamsFlushedAndLongAnswersInChunks(t *testing.T) {
	long := strings.Repeat("x", frontBufferLimit+1)
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			io.WriteString(w, long)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "data: one\n\n")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "data: two\n\n")
	}), nil)
	c := dialRaw(t, addr)
	c.send(getReq)
	resp, body := c.answer("GET")
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || body != "data: one\n\ndata: two\n\n" {
		t.Fatalf("streamed answer %q, transfer encoding %v", body, resp.TransferEncoding)
	}
	c.send("GET /long HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, body = c.answer("GET")
	if len(resp.TransferEncoding) != 1 || body != long {
		t.Fatalf("long answer of %d bytes (want %d), transfer encoding %v", len(body), len(long), resp.TransferEncoding)
	}
}

// A client that leaves while its request runs cancels the request, so that
// the proxy stops waiting on the upstream; whether the answer was a plain
// one still to come, or a stream.
func TestFrontCancelsTheRequestOfAClientThatLeft(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			cancelled := make(chan struct{})
			addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.ReadAll(r.Body) // as the proxy does before it forwards
				if stream {
					w.WriteHeader(http.StatusOK)
					http.NewResponseController(w).Flush()
				}
				select {
				case <-r.Context().Done():
					close(cancelled)
				case <-time.After(10 * time.Second):
				}
			}), nil)
			c := dialRaw(t, addr)
			c.send("POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi")
			time.Sleep(100 * time.Millisecond)
			c.c.Close()
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the request was not cancelled when its client left")
			}
		})
	}
}

// Expect: 100-continue is answered when the handler first reads the body,
// as net/http does: a request refused unread never has its body sent, and
// its connection closes after the answer, since the client may never send
// the body it was not asked for.
func TestFrontSendsContinueOnlyForABodyTheHandlerReads(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		echoPath().ServeHTTP(w, r)
	}), nil)
	head := "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"

	c := dialRaw(t, addr)
	c.send(fmt.Sprintf(head, "/echo"))
	if resp, _ := c.answer("POST"); resp.StatusCode != http.StatusContinue {
		t.Fatalf("first answer to a body the handler reads: %d, want 100", resp.StatusCode)
	}
	c.send("hello")
	if resp, body := c.answer("POST"); resp.StatusCode != http.StatusOK || body != "POST /echo hello" {
		t.Fatalf("answer after the body: %d %q", resp.StatusCode, body)
	}

	c = dialRaw(t, addr)
	c.send(fmt.Sprintf(head, "/refuse"))
	resp, _ := c.answer("POST")
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("first answer to a request refused unread: %d, want 413 and no 100 Continue", resp.StatusCode)
	}
	if !resp.Close {
		t.Error("the answer to a request whose body never came keeps the connection")
	}
	if !c.closed() {
		t.Error("the connection stayed open")
	}
}

// The watchdog that starts the watches ticks only while the front has
// connections: an idle node does not wake twenty times a second.
func TestFrontWatchdogRunsOnlyWithConnections(t *testing.T) {
	addr, f := startFront(t, echoPath(), nil)
	watching := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.watching
	}
	if watching() {
		t.Fatal("the watchdog runs before any connection")
	}
	for range 2 { // it starts again with the next connection
		c := dialRaw(t, addr)
		c.send(getReq)
		c.answer("GET")
		if !watching() {
			t.Fatal("no watchdog while a connection is open")
		}
		c.c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for watching() {
			if time.Now().After(deadline) {
				t.Fatal("the watchdog still runs 5 s after the last connection closed")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Closing the front stops it at once, whatever its period.
	addr, f = startFront(t, echoPath(), func(f *front) { f.watchAfter = time.Hour })
	c := dialRaw(t, addr)
	c.send(getReq)
	c.answer("GET")
	if !watching() {
		t.Fatal("no watchdog while a connection is open")
	}
	f.close()
	deadline := time.Now().Add(5 * time.Second)
	for watching() {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog of a closed front still runs after 5 s (its period is 30 min)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A request that runs past watchAfter is watched; ending the watch must
// leave the connection as it was, with a request the client sent meanwhile
// (pipelined) still to be read.
func TestFrontConnectionOutlivesTheWatch(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(150 * time.Millisecond)
			if r.Context().Err() != nil {
				t.Error("a pipelined request cancelled the one before it")
			}
		}
		io.WriteString(w, r.URL.Path)
	}), nil)
	c := dialRaw(t, addr)
	for range 3 {
		c.send("GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		if _, body := c.answer("GET"); body != "/slow" {
			t.Fatalf("answer %q", body)
		}
	}
	c.send("GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	time.Sleep(60 * time.Millisecond) // the watch has begun
	c.send("GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	for _, want := range []string{"/slow", "/next"} {
		if _, body := c.answer("GET"); body != want {
			t.Fatalf("answer %q, want %q", body, want)
		}
	}
}

func TestFrontRefusesBadRequests(t *testing.T) {
	var reached atomic.Int32
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }), nil)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"garbage", "hello\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400},
		{"header value with a control byte", "GET / HTTP/1.1\r\nHost: x\r\nA: b\x01c\r\n\r\n", 400},
		{"length and chunked disagree", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"bad chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, chunked\r\n\r\n", 400},
		{"expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nA: " + strings.Repeat("a", 9<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.send(tc.req)
			resp, _ := c.answer("GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("status %d (close %v), want %d and the connection closed", resp.StatusCode, resp.Close, tc.status)
			}
			if !c.closed() {
				t.Error("connection left open")
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d bad requests reached the handler", n)
	}
}

// Slow and idle clients are cut off: one that trickles its headers, one
// that opens a connection and sends nothing, one idle after an answer, and
// one that stalls in its body.
func TestFrontCutsOffSlowAndIdleClients(t *testing.T) {
	addr, _ := startFront(t, echoPath(), func(f *front) {
		f.readHeaderTimeout = 300 * time.Millisecond
		f.idleTimeout = 300 * time.Millisecond
		f.readTimeout = 600 * time.Millisecond
	})
	for _, tc := range []struct {
		name string
		send func(*rawConn)
	}{
		{"silent", func(*rawConn) {}},
		{"trickling headers", func(c *rawConn) {
			for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\n") {
				c.c.Write([]byte{b})
				time.Sleep(30 * time.Millisecond)
			}
		}},
		{"idle after an answer", func(c *rawConn) {
			c.send(getReq)
			c.answer("GET")
		}},
		{"stalled body", func(c *rawConn) {
			c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
			c.answer("POST") // the handler's, to a body cut short
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			start := time.Now()
			tc.send(c)
			if !c.closed() {
				t.Fatal("connection left open")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("closed after %v", d)
			}
		})
	}
}

func TestFrontBodiesTheHandlerLeft(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok") // never reads the body
	}), nil)
	small := dialRaw(t, addr)
	small.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + getReq)
	small.answer("POST")
	if _, body := small.answer("GET"); body != "ok" {
		t.Fatalf("request after a small unread body answered %q", body)
	}
	big := dialRaw(t, addr)
	n := maxUnreadBody + 10
	big.send(fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n))
	go big.c.Write(bytes.Repeat([]byte("a"), n))
	big.answer("POST")
	if !big.closed() {
		t.Error("connection kept after a large unread body")
	}
}

func TestFrontAnswerFraming(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short": // declares more than it writes
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
		case "/inject":
			w.Header().Set("X-A", "v\r\nSet-Cookie: evil=1")
			w.Header()["X-B: 1\r\nSet-Cookie"] = []string{"evil=2"} // in the name: dropped
			io.WriteString(w, "ok")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "not sent")
		default:
			io.WriteString(w, "body")
		}
	}), nil)
	c := dialRaw(t, addr)
	c.send("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.answer("HEAD"); body != "" || resp.ContentLength != 4 {
		t.Errorf("HEAD: body %q, length %d", body, resp.ContentLength)
	}
	c.send("GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.answer("GET"); resp.StatusCode != 204 || body != "" {
		t.Errorf("204 answered %d %q", resp.StatusCode, body)
	}
	c.send("GET /inject HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.answer("GET"); resp.Header.Get("Set-Cookie") != "" || len(resp.Cookies()) != 0 || resp.Header.Get("X-B") != "" {
		t.Errorf("a line break in a header's value or name made a header of its own: %v", resp.Header)
	} else if resp.Header.Get("X-A") != "v  Set-Cookie: evil=1" {
		t.Errorf("X-A = %q, want its line break made spaces as net/http does", resp.Header.Get("X-A"))
	}
	c.send("GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
	// The client waits for 10 bytes and gets 3: the connection must close,
	// or the next answer would be read as the rest of this one.
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("short body read whole")
	}
	if !c.closed() {
		t.Error("connection kept after an answer shorter than its length")
	}

	old := dialRaw(t, addr)
	old.send("GET /x HTTP/1.0\r\n\r\n")
	if resp, body := old.answer("GET"); body != "body" || !resp.Close {
		t.Errorf("HTTP/1.0: %q, close %v", body, resp.Close)
	}
	if !old.closed() {
		t.Error("HTTP/1.0 connection kept")
	}
}

func TestFrontSurvivesAPanickingHandler(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "fine")
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if !c.closed() {
		t.Fatal("connection of a panicking handler left open")
	}
	d := dialRaw(t, addr)
	d.send(getReq)
	if _, body := d.answer("GET"); body != "fine" {
		t.Fatalf("after a panic: %q", body)
	}
}

// Closing the server ends every connection and cancels the requests in
// progress, streams included.
func TestFrontCloseEndsRequestsInProgress(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	addr, f := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("never cancelled")
		}
	}), nil)
	c := dialRaw(t, addr)
	c.send(getReq)
	<-started
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("request in progress: %v", err)
	}
	if !c.closed() {
		t.Error("connection left open")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still accepts")
	}
}

// fuzzConn is a connection whose client sent in and then closed its side:
// reads return in, then EOF; writes are kept.
type fuzzConn struct {
	net.Conn // nil: only what front uses is implemented
	r        *bytes.Reader
	w        bytes.Buffer
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(100, 64, 0, 9), Port: 1} }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fuzzConn) SetDeadline(t time.Time) error    { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return c.RemoteAddr() }

// FuzzFrontConnection feeds any bytes to front as one client connection
// and holds what comes back to HTTP/1.1: a sequence of answers the
// standard library's client can read, one for each request the handler
// saw, with the body the handler wrote, in order; and, only at the end,
// one refusal (400, 417, 431 or 505) before the connection closes.
func FuzzFrontConnection(f *testing.F) {
	for _, s := range []string{
		getReq,
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + getReq,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		type call struct {
			method string
			body   string
		}
		var calls []call
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			answer := fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, len(b))
			calls = append(calls, call{r.Method, answer})
			if r.URL.Path == "/stream" {
				io.WriteString(w, answer[:1])
				http.NewResponseController(w).Flush()
				io.WriteString(w, answer[1:])
				return
			}
			io.WriteString(w, answer)
		})
		fr := newFront(h, slog.New(slog.DiscardHandler), time.Second)
		fr.maxHeaderBytes = 1 << 10
		fr.watchAfter = time.Hour
		c := &fuzzConn{r: bytes.NewReader(in)}
		newFrontConn(fr, c).serve()

		br := bufio.NewReader(bytes.NewReader(c.w.Bytes()))
		for i := 0; ; i++ {
			if _, err := br.Peek(1); err == io.EOF {
				if i < len(calls) {
					t.Fatalf("%d requests reached the handler, %d answers came back", len(calls), i)
				}
				return
			}
			method := http.MethodGet
			if i < len(calls) {
				method = calls[i].method
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("answer %d unreadable: %v\n%q", i, err, c.w.Bytes())
			}
			if resp.StatusCode == http.StatusContinue {
				i--
				continue
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("answer %d's body unreadable: %v\n%q", i, err, c.w.Bytes())
			}
			if i < len(calls) {
				want := calls[i].body
				if method == http.MethodHead {
					want = ""
				}
				if resp.StatusCode != http.StatusOK || string(body) != want {
					t.Fatalf("answer %d: %d %q, want the handler's %q", i, resp.StatusCode, body, want)
				}
				continue
			}
			switch resp.StatusCode {
			case 400, 417, 431, 505:
			default:
				t.Fatalf("answer %d without a request: %d %q", i, resp.StatusCode, body)
			}
			if _, err := br.Peek(1); err != io.EOF {
				t.Fatalf("more after a refusal: %q", c.w.Bytes())
			}
			return
		}
	})
}
