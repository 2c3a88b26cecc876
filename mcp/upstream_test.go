package mcp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is a real net/http server on loopback that counts the
// connections it accepted.
type countingServer struct {
	url   string
	conns atomic.Int32
	srv   *http.Server
}

func newCountingServer(t *testing.T, h http.Handler, tune func(*http.Server)) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingServer{url: "http://" + ln.Addr().String() + "/mcp"}
	cs.srv = &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			cs.conns.Add(1)
		}
	}}
	if tune != nil {
		tune(cs.srv)
	}
	go cs.srv.Serve(ln)
	t.Cleanup(func() { cs.srv.Close() })
	return cs
}

func newTestTransport(t *testing.T) *upstreamTransport {
	tr := newUpstreamTransport()
	t.Cleanup(tr.Close)
	return tr
}

// post sends body and returns the answer's body, read to its end.
func post(t *testing.T, tr *upstreamTransport, url, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST %q: %v", body, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %q: reading answer: %v", body, err)
	}
	return string(b)
}

func echoHandler(chunked bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("got:"))
		if chunked {
			w.(http.Flusher).Flush() // forces chunked encoding
		}
		w.Write(b)
	}
}

func TestUpstreamTransportKeepsOneConnection(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			s := newCountingServer(t, echoHandler(chunked), nil)
			tr := newTestTransport(t)
			for i := range 50 {
				want := fmt.Sprintf("got:%d", i)
				if got := post(t, tr, s.url, fmt.Sprint(i)); got != want {
					t.Fatalf("answer %d = %q, want %q", i, got, want)
				}
			}
			if n := s.conns.Load(); n != 1 {
				t.Errorf("50 calls one after another used %d connections, want 1", n)
			}
		})
	}
}

// An upstream may close a kept-alive connection at any time after an
// answer (idle timeout, restart). The next call, even a POST that must
// never be sent twice, goes out on a new connection rather than failing.
func TestUpstreamTransportSkipsConnectionsTheUpstreamClosed(t *testing.T) {
	t.Run("idle timeout", func(t *testing.T) {
		s := newCountingServer(t, echoHandler(false), func(s *http.Server) { s.IdleTimeout = 30 * time.Millisecond })
		tr := newTestTransport(t)
		post(t, tr, s.url, "a")
		time.Sleep(200 * time.Millisecond) // the server closes the idle connection
		if got := post(t, tr, s.url, "b"); got != "got:b" {
			t.Fatalf("after idle close: %q", got)
		}
		if n := s.conns.Load(); n != 2 {
			t.Errorf("connections = %d, want 2", n)
		}
	})
	t.Run("closed right after the answer", func(t *testing.T) {
		// A raw server that answers once per connection and hangs up
		// without saying so.
		url, conns := rawUpstream(t, func(c net.Conn, req *http.Request) {
			b, _ := io.ReadAll(req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		})
		tr := newTestTransport(t)
		for i := range 20 {
			want := fmt.Sprint(i)
			if got := post(t, tr, url, want); got != want {
				t.Fatalf("call %d = %q", i, got)
			}
			time.Sleep(5 * time.Millisecond) // let the close arrive
		}
		if n := conns.Load(); n != 20 {
			t.Errorf("connections = %d, want 20 (one per answer)", n)
		}
	})
}

func TestUpstreamTransportHonoursConnectionClose(t *testing.T) {
	s := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		echoHandler(false)(w, r)
	}), nil)
	tr := newTestTransport(t)
	for i := range 3 {
		if got, want := post(t, tr, s.url, fmt.Sprint(i)), fmt.Sprintf("got:%d", i); got != want {
			t.Fatalf("%q, want %q", got, want)
		}
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("connections = %d, want 3", n)
	}
}

func TestUpstreamTransportSkipsEarlyHints(t *testing.T) {
	s := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		echoHandler(false)(w, r)
	}), nil)
	tr := newTestTransport(t)
	if got := post(t, tr, s.url, "x"); got != "got:x" {
		t.Fatalf("answer = %q", got)
	}
}

// An event stream that never ends: closing its body, or cancelling the
// request, must end it at once and never hand its connection to another
// call.
func TestUpstreamTransportEndsStreams(t *testing.T) {
	gone := make(chan struct{}, 4)
	s := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			echoHandler(false)(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: first\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		gone <- struct{}{}
	}), nil)
	tr := newTestTransport(t)
	for _, how := range []string{"close", "cancel"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || line != "data: first\n" {
				t.Fatalf("first event: %q %v", line, err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, resp.Body)
				done <- err
			}()
			if how == "close" {
				resp.Body.Close()
			} else {
				cancel()
			}
			select {
			case err := <-done:
				if err == nil {
					t.Error("the stream ended cleanly; want an error")
				}
				if how == "cancel" && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
					t.Errorf("after cancel: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("reading the stream did not end")
			}
			select {
			case <-gone:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream never saw the stream end")
			}
			before := s.conns.Load()
			if got := post(t, tr, s.url, "after"); got != "got:after" {
				t.Fatalf("call after the stream: %q", got)
			}
			if s.conns.Load() != before+1 {
				t.Error("the stream's connection was reused")
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestUpstreamTransportRefusesAfterClose(t *testing.T) {
	s := newCountingServer(t, echoHandler(false), nil)
	tr := newUpstreamTransport()
	post(t, tr, s.url, "a")
	tr.Close()
	req, _ := http.NewRequest(http.MethodPost, s.url, bytes.NewReader([]byte("b")))
	if _, err := tr.RoundTrip(req); !errors.Is(err, errTransportClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestReadAllSized(t *testing.T) {
	for _, c := range []struct {
		body     string
		declared int64
		max      int64
		want     string
	}{
		{"hello", 5, 10, "hello"},
		{"hello", -1, 10, "hello"},
		{"hello", 5, 3, "hell"},        // too large: max+1 bytes say so
		{"hello", 2, 10, "hello"},      // more than declared: read on
		{"hello world", 2, 4, "hello"}, // ... to the limit
		{"", 0, 10, ""},
	} {
		got, err := readAllSized(strings.NewReader(c.body), c.declared, c.max)
		if err != nil || string(got) != c.want {
			t.Errorf("readAllSized(%q, %d, %d) = %q, %v; want %q", c.body, c.declared, c.max, got, err, c.want)
		}
	}
	if _, err := readAllSized(strings.NewReader("abc"), 5, 10); err == nil {
		t.Error("a body shorter than declared read without error")
	}
}

// FuzzUpstreamAnswer feeds arbitrary bytes to the transport as an
// upstream's answer. Whatever they are, a call ends (with an answer or an
// error, never a hang or a panic), and a connection goes back to the pool
// only after an answer read to its end that did not ask to close.
func FuzzUpstreamAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n",
		"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 7) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"garbage\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		tr := newUpstreamTransport()
		defer tr.Close()
		client, server := net.Pipe()
		defer server.Close()
		go func() {
			if req, err := http.ReadRequest(bufio.NewReader(server)); err == nil {
				io.Copy(io.Discard, req.Body)
			}
			server.Write(answer)
			server.Close()
		}()
		uc := newUpstreamConn("fuzz", client)
		req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.send(context.Background(), uc, req)
		if err != nil {
			if n := len(tr.idle["fuzz"]); n != 0 {
				t.Fatalf("a failed call pooled its connection")
			}
			return
		}
		_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if pooled := len(tr.idle["fuzz"]) == 1; pooled && (rerr != nil || resp.Close) {
			t.Fatalf("pooled a connection after read error %v / Close=%v", rerr, resp.Close)
		}
	})
}

// rawUpstream is an upstream that answers whatever answer writes to the
// connection: one request per connection, which it then closes. It returns
// the upstream's URL and a count of its connections.
func rawUpstream(t *testing.T, answer func(c net.Conn, req *http.Request)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					answer(c, req)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/mcp", conns
}

func TestUpstreamTransportBoundsAnAnswersHead(t *testing.T) {
	url, _ := rawUpstream(t, func(c net.Conn, _ *http.Request) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nX-Junk: "))
		junk := bytes.Repeat([]byte("a"), 64<<10)
		for range 64 { // 4 MiB of one header, never ended
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	})
	tr := newTestTransport(t)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if _, err := tr.RoundTrip(req); !errors.Is(err, errAnswerHead) {
		t.Fatalf("endless header: %v", err)
	}
}

func TestUpstreamTransportBoundsInterimAnswers(t *testing.T) {
	url, _ := rawUpstream(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", maxInterim+1)+"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	tr := newTestTransport(t)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "interim") {
		t.Fatalf("%d interim answers: %v", maxInterim+1, err)
	}
}

// writeRequest frames the proxy's requests as Request.Write does: what
// net/http reads back from either is the same request.
func TestWriteRequestReadsBackAsRequestWrite(t *testing.T) {
	mk := func(method, target, body string, h http.Header) *http.Request {
		req, err := http.NewRequest(method, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case body != "":
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = int64(len(body))
		case method == http.MethodPost:
			// Request.Write would probe any other body of length 0, and
			// chunk it; writeRequest sends Content-Length: 0 for both.
			req.Body = http.NoBody
		}
		for k, vs := range h {
			req.Header[k] = vs
		}
		return req
	}
	mcpHeaders := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Mcp-Session-Id": {"s-1"}, "Mcp-Protocol-Version": {"2025-06-18"}, "X-Two": {"a", "b"}, "Authorization": {"Bearer t"}}
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"post", func() *http.Request {
			return mk("POST", "http://127.0.0.1:9000/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, mcpHeaders)
		}},
		{"post, empty body", func() *http.Request { return mk("POST", "http://127.0.0.1:9000/mcp", "", nil) }},
		{"get with a query", func() *http.Request { return mk("GET", "http://127.0.0.1:9000/mcp?x=1&y=%20", "", mcpHeaders) }},
		{"delete", func() *http.Request {
			return mk("DELETE", "http://[::1]:9000/a/b", "", http.Header{"Mcp-Session-Id": {"s"}})
		}},
		{"close", func() *http.Request {
			r := mk("GET", "http://localhost:9000/", "", nil)
			r.Close = true
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ours, theirs bytes.Buffer
			bw := bufio.NewWriter(&ours)
			if err := writeRequest(bw, tc.req()); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if err := tc.req().Write(&theirs); err != nil {
				t.Fatal(err)
			}
			a, err := http.ReadRequest(bufio.NewReader(&ours))
			if err != nil {
				t.Fatalf("reading ours back: %v\n%s", err, ours.String())
			}
			b, err := http.ReadRequest(bufio.NewReader(&theirs))
			if err != nil {
				t.Fatal(err)
			}
			ab, _ := io.ReadAll(a.Body)
			bb, _ := io.ReadAll(b.Body)
			b.Header.Del("User-Agent") // Request.Write's default, which the proxy does not send
			if a.Method != b.Method || a.RequestURI != b.RequestURI || a.Host != b.Host || a.Close != b.Close ||
				a.ContentLength != b.ContentLength || !bytes.Equal(ab, bb) || fmt.Sprint(a.Header) != fmt.Sprint(b.Header) {
				t.Errorf("ours reads back as\n%s %s host=%s close=%v len=%d %v %q\nRequest.Write's as\n%s %s host=%s close=%v len=%d %v %q",
					a.Method, a.RequestURI, a.Host, a.Close, a.ContentLength, a.Header, ab,
					b.Method, b.RequestURI, b.Host, b.Close, b.ContentLength, b.Header, bb)
			}
		})
	}
}

// A header that could break the framing is refused before a byte is
// written, and so is a body shorter than declared.
func TestWriteRequestRefusesWhatWouldBreakFraming(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*http.Request)
	}{
		{"line break in a value", func(r *http.Request) { r.Header.Set("Mcp-Name", "echo\r\nX-Injected: 1") }},
		{"bare newline in a value", func(r *http.Request) { r.Header.Set("Mcp-Name", "a\nb") }},
		{"bad name", func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }},
		{"bad host", func(r *http.Request) { r.Host = "a b" }},
		{"unknown length", func(r *http.Request) { r.ContentLength = -1 }},
		{"short body", func(r *http.Request) { r.ContentLength = 100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://127.0.0.1:9000/mcp", strings.NewReader(`{}`))
			tc.mod(req)
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			err := writeRequest(bw, req)
			if err == nil {
				t.Fatal("written, want an error")
			}
			if tc.name != "short body" && bw.Buffered() > 0 {
				t.Errorf("%d bytes buffered before the refusal: %q", bw.Buffered(), out.String())
			}
		})
	}
}

// Framing headers in a request's header map are dropped however their
// keys are spelt: the length writeRequest sends is the body's.
func TestWriteRequestDropsFramingHeadersInAnySpelling(t *testing.T) {
	req, _ := http.NewRequest("POST", "http://127.0.0.1:9000/mcp", strings.NewReader(`{"a":1}`))
	req.Header["content-length"] = []string{"999"}
	req.Header["transfer-encoding"] = []string{"chunked"}
	req.Header["CONNECTION"] = []string{"close"}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := writeRequest(bw, req); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	raw := out.String()
	got, err := http.ReadRequest(bufio.NewReader(&out))
	if err != nil {
		t.Fatalf("reading back: %v\n%s", err, raw)
	}
	body, _ := io.ReadAll(got.Body)
	if got.ContentLength != 7 || string(body) != `{"a":1}` || len(got.TransferEncoding) != 0 || got.Close ||
		strings.Count(strings.ToLower(raw), "content-length") != 1 {
		t.Errorf("framing headers got through:\n%s", raw)
	}
}
