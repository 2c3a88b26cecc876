package mcp

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// serveWithReadTimeout puts a proxy whose requests must be read within d
// in front of upstream, and returns the service's endpoint.
func serveWithReadTimeout(t *testing.T, upstream string, d time.Duration) string {
	t.Helper()
	pol := mustPolicy(t, testPolicy)
	p := New(Config{
		Node:   "server-1",
		WhoIs:  testWhoIs,
		Policy: func() (*policy.Policy, uint64) { return pol, 1 },
	})
	p.front.readTimeout = d
	if err := p.SetService(Service{Name: "charts", Tags: []string{"tag:phi"}, URL: upstream}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	return "http://" + ln.Addr().String() + "/svc/charts/mcp"
}

// A caller that sends a request's headers and then stalls in its body is
// cut off after the read timeout, and nothing reaches the upstream; an
// answer that streams for longer than the read timeout is not.
func TestReadTimeoutBoundsRequestsNotStreams(t *testing.T) {
	const d = 300 * time.Millisecond
	var posts atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n"))
		w.(http.Flusher).Flush()
		time.Sleep(4 * d) // a slow tool, well past the read timeout
		w.Write([]byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"done\"}]}}\n\n"))
	}))
	defer up.Close()
	endpoint := serveWithReadTimeout(t, up.URL+"/mcp", d)
	host := strings.TrimPrefix(strings.TrimSuffix(endpoint, "/svc/charts/mcp"), "http://")
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}

	t.Run("stalled body", func(t *testing.T) {
		c, err := dialer.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /svc/charts/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":")
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // until the proxy gives up on us
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("a stalled body held the connection for %v", el)
		}
		if n := posts.Load(); n != 0 {
			t.Fatalf("the upstream got %d requests from a stalled body", n)
		}
	})

	t.Run("long stream", func(t *testing.T) {
		c, err := dialer.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
		io.WriteString(c, "POST /svc/charts/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("stream: %v (so far %q)", err, got)
		}
		if !strings.Contains(string(got), `"progress":1`) || !strings.Contains(string(got), `"text":"done"`) {
			t.Fatalf("a stream longer than the read timeout was cut: %q", got)
		}
	})
}
