package mcp

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestOnePeerCannotHoldEveryConnection: a source over its bound of open
// connections has the next one closed unread, while other sources are
// served; closing one gives its slot back.
func TestOnePeerCannotHoldEveryConnection(t *testing.T) {
	up := newUpstream(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	p := New(Config{
		WhoIs:             testWhoIs,
		Policy:            func() (*policy.Policy, uint64) { return mustPolicy(t, testPolicy), 1 },
		Audit:             func([]api.AuditEvent) (func() error, error) { return nil, nil },
		MaxConnsPerSource: 2,
	})
	if err := p.SetService(Service{Name: "charts", URL: up.url}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() { p.Close(); <-done })

	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// ping answers on a connection, or reports that it was closed unread.
	ping := func(c net.Conn) (int, bool) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
		req, err := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/svc/charts/mcp", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := req.Write(c); err != nil {
			return 0, false
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return 0, false
		}
		resp.Body.Close()
		return resp.StatusCode, true
	}
	held := []net.Conn{dial("127.0.0.2"), dial("127.0.0.2")}
	for _, c := range held {
		if _, ok := ping(c); !ok {
			t.Fatal("a connection under the bound was not served")
		}
	}
	if status, ok := ping(dial("127.0.0.2")); ok {
		t.Fatalf("a third connection from one source was served (%d)", status)
	}
	if _, ok := ping(dial("127.0.0.3")); !ok {
		t.Fatal("another source was refused")
	}
	held[0].Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, ok := ping(dial("127.0.0.2")); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not give its slot back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
