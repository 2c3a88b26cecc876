package mcp

// Tests of front from a hostile client's side, several against net/http's
// Server with the same handler: front replaced it, and must not behave
// worse where it matters.

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// bothServers serves h with front and with net/http on loopback.
func bothServers(t *testing.T, h http.Handler) []struct{ name, addr string } {
	t.Helper()
	addr, _ := startFront(t, h, nil)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return []struct{ name, addr string }{{"front", addr}, {"net/http", hs.Listener.Addr().String()}}
}

// A stream whose (small) body the handler did not read is watched too: front
// reads the body before the answer, as net/http does, so a client that
// leaves cancels its request.
func TestFrontWatchesAStreamWhoseBodyWasNotRead(t *testing.T) {
	cancelled := make(chan string, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush() // as relay does for SSE
		select {
		case <-r.Context().Done():
			cancelled <- r.URL.Path
		case <-time.After(4 * time.Second):
		}
	})
	for _, s := range bothServers(t, h) {
		t.Run(s.name, func(t *testing.T) {
			c := dialRaw(t, s.addr)
			// A GET (the standalone SSE stream) with a one-byte body.
			c.send("GET /" + s.name + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nx")
			if _, err := http.ReadResponse(c.br, nil); err != nil {
				t.Fatal(err)
			}
			c.c.Close() // the client leaves
			select {
			case path := <-cancelled:
				if path != "/"+s.name {
					t.Fatalf("cancelled %s", path)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the client left, and its request was not cancelled")
			}
		})
	}
}

// A write that fails because the client left cancels the request, as in
// net/http, even where no watch runs (here one pipelined byte ended it)
// and the handler ignores write errors.
func TestFrontCancelsOnAFailedWrite(t *testing.T) {
	cancelled := make(chan struct{}, 4)
	var failedWrites atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		rc.Flush()
		deadline := time.After(4 * time.Second)
		for {
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
				return
			case <-deadline:
				return
			case <-time.After(20 * time.Millisecond):
			}
			// errors ignored, as relaySSE/emitEvent do
			if _, err := io.WriteString(w, "data: {}\n\n"); err != nil {
				failedWrites.Add(1)
			}
			rc.Flush()
		}
	})
	for _, s := range bothServers(t, h) {
		t.Run(s.name, func(t *testing.T) {
			failedWrites.Store(0)
			c := dialRaw(t, s.addr)
			c.send("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nG") // one pipelined byte
			if _, err := http.ReadResponse(c.br, nil); err != nil {
				t.Fatal(err)
			}
			c.c.Close()
			select {
			case <-cancelled:
			case <-time.After(3 * time.Second):
				t.Fatalf("the client left, %d writes failed, and the request was not cancelled", failedWrites.Load())
			}
		})
	}
}

// Through the real proxy: a caller opens its session's standalone SSE
// stream (GET) with a one-byte body and leaves. The upstream stream must
// end, or the session stays active (no idle sweep takes it) and the
// caller's connection slot stays taken with nothing held on its side.
func TestAbandonedStreamEndsUpstream(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	{
		{
			streamEnded := make(chan struct{}, 4)
			var sids atomic.Int32
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.Method {
				case http.MethodPost:
					io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Mcp-Session-Id", "sess-"+string(rune('a'+sids.Add(1))))
					io.WriteString(w, `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
				case http.MethodGet:
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						streamEnded <- struct{}{}
					case <-time.After(6 * time.Second):
					}
				}
			}))
			defer up.Close()
			p := New(Config{WhoIs: testWhoIs, Policy: func() (*policy.Policy, uint64) { return pol, 1 }})
			if err := p.SetService(Service{Name: "charts", Tags: []string{"tag:phi"}, URL: up.URL + "/mcp"}); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go p.Serve(ln)
			defer p.Close()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}} // alice
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
			io.WriteString(c, "POST /svc/charts/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: "+strconv.Itoa(len(init))+"\r\n\r\n"+init)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			sid := resp.Header.Get("Mcp-Session-Id")
			if sid == "" {
				t.Fatalf("no session: %d", resp.StatusCode)
			}
			io.WriteString(c, "GET /svc/charts/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: "+sid+"\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: 1\r\n\r\nx")
			resp, err = http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("stream: %v %v", resp, err)
			}
			c.Close() // the caller leaves
			select {
			case <-streamEnded:
			case <-time.After(3 * time.Second):
				svc := p.service("charts")
				svc.mu.Lock()
				active := svc.sessions[sid].active.Load()
				svc.mu.Unlock()
				t.Fatalf("caller gone 3 s, upstream stream still open, session %s active=%d", sid, active)
			}
		}
	}
}

// Running out of file descriptors (EMFILE) for a moment must not stop the
// proxy accepting for good.
type emfileOnce struct {
	net.Listener
	n atomic.Int32
}

func (l *emfileOnce) Accept() (net.Conn, error) {
	if l.n.Add(1) == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: &osSyscallError{syscall.EMFILE}}
	}
	return l.Listener.Accept()
}

type osSyscallError struct{ err syscall.Errno }

func (e *osSyscallError) Error() string   { return "accept4: " + e.err.Error() }
func (e *osSyscallError) Unwrap() error   { return e.err }
func (e *osSyscallError) Timeout() bool   { return e.err.Timeout() }
func (e *osSyscallError) Temporary() bool { return e.err.Temporary() }

func TestFrontAcceptsAgainAfterEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newFront(echoPath(), slog.New(slog.DiscardHandler), time.Second)
	done := make(chan error, 1)
	go func() { done <- f.serve(&emfileOnce{Listener: ln}) }()
	defer f.close()
	select {
	case err := <-done:
		t.Fatalf("serve returned after one EMFILE from Accept: %v (the proxy no longer accepts)", err)
	case <-time.After(500 * time.Millisecond):
	}
}

// Stress of the watcher, the watchdog, stopWatch and the next
// request: a client that stays, pipelines requests with bodies (length and
// chunked) in bursts, while handlers run around watchAfter and sometimes
// flush. Every answer must come back whole and in order, and no request may
// be cancelled (the client never leaves).
func TestFrontWatcherUnderPipelining(t *testing.T) {
	var cancelled atomic.Int32
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var d time.Duration
		fmt.Sscan(r.URL.Query().Get("d"), &d)
		time.Sleep(d)
		if r.URL.Query().Get("f") == "1" {
			io.WriteString(w, "<")
			http.NewResponseController(w).Flush()
			time.Sleep(d)
		}
		if r.Context().Err() != nil {
			cancelled.Add(1)
		}
		fmt.Fprintf(w, "%s|%d", r.URL.Path, len(b))
	}), func(f *front) { f.watchAfter = time.Millisecond })
	c := dialRaw(t, addr)
	c.c.SetDeadline(time.Now().Add(60 * time.Second))
	rng := rand.New(rand.NewPCG(1, 2))
	n := 0
	for range 600 {
		burst := 1 + rng.IntN(3)
		var sb strings.Builder
		var want []string
		for range burst {
			n++
			body := strings.Repeat("b", 1+rng.IntN(300))
			q := fmt.Sprintf("/r%d?d=%dus&f=%d", n, rng.IntN(2500), rng.IntN(2))
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&sb, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", q, len(body), body)
			} else {
				fmt.Fprintf(&sb, "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", q, len(body), body)
			}
			want = append(want, fmt.Sprintf("/r%d|%d", n, len(body)))
		}
		s := sb.String()
		// Send the burst in two pieces around a pause, so a watcher may be
		// reading when the rest arrives.
		cut := rng.IntN(len(s) + 1)
		c.send(s[:cut])
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		c.send(s[cut:])
		for _, w := range want {
			_, body := c.answer("POST")
			body = strings.TrimPrefix(body, "<")
			if body != w {
				t.Fatalf("answer %q, want %q", body, w)
			}
		}
	}
	if k := cancelled.Load(); k != 0 {
		t.Fatalf("%d requests cancelled though the client stayed", k)
	}
}

// Framing headers a handler sets where they cannot hold are dropped or
// obeyed as net/http does: a length set after WriteHeader on a stream, a
// length on a 204, and Connection: close.
func TestFrontFramesAnswersAsNetHTTP(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/late-length": // a length set after WriteHeader, then a stream
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
			http.NewResponseController(w).Flush()
		case "/204-length":
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(http.StatusNoContent)
		case "/close": // as ServeMux answers "*"
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}
	})
	for _, s := range bothServers(t, h) {
		t.Run(s.name, func(t *testing.T) {
			for _, path := range []string{"/late-length", "/204-length", "/close"} {
				c := dialRaw(t, s.addr)
				c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
				if path == "/late-length" { // raw: the client's parser hides the conflict
					var head strings.Builder
					for {
						l, err := c.br.ReadString('\n')
						if err != nil {
							t.Fatal(err)
						}
						head.WriteString(l)
						if l == "\r\n" {
							break
						}
					}
					if h := head.String(); strings.Contains(h, "Transfer-Encoding: chunked") && strings.Contains(h, "Content-Length:") {
						t.Errorf("%s: both framings in one answer:\n%s", path, h)
					}
					continue
				}
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				io.ReadAll(resp.Body)
				hdr := resp.Header
				switch path {
				case "/late-length":
					if len(resp.TransferEncoding) > 0 && hdr.Get("Content-Length") != "" {
						t.Errorf("%s: both Transfer-Encoding %v and Content-Length %q", path, resp.TransferEncoding, hdr.Get("Content-Length"))
					}
				case "/204-length":
					if hdr.Get("Content-Length") != "" {
						t.Errorf("%s: 204 with Content-Length %q", path, hdr.Get("Content-Length"))
					}
				case "/close":
					if !resp.Close {
						t.Errorf("%s: the handler's Connection: close dropped; connection kept", path)
					}
				}
			}
		})
	}
}

// A client that sends a request and never reads its answer cannot pin the
// handler (mid-answer, holding its buffers and its upstream): a write that
// makes no progress for writeTimeout fails. (net/http's Server, as the
// proxy used it, had no write timeout.)
func TestClientThatDoesNotReadIsCutOff(t *testing.T) {
	done := make(chan struct{}, 1)
	chunk := strings.Repeat("x", 32<<10)
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 512 { // 16 MiB, as a large tools/call answer
			if _, err := io.WriteString(w, chunk); err != nil {
				break
			}
		}
		done <- struct{}{}
	}), func(f *front) { f.writeTimeout = 300 * time.Millisecond })
	c := dialRaw(t, addr)
	c.send(getReq)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still blocked writing to a client that does not read")
	}
	if !c.closed() {
		t.Error("connection kept")
	}
}
