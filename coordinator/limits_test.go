package coordinator_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// served is a coordinator with a config of the test's choosing, served
// over TLS on loopback until the test ends.
type served struct {
	addr  string
	url   string
	cred  *identity.Credential
	admin *adminclient.Client
	logs  *meshtest.SyncBuffer
}

func serveCoordinator(t *testing.T, cfg coordinator.Config) *served {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "coord")
	if err := coordinator.Init(dir, "test.mcpmesh", time.Now()); err != nil {
		t.Fatal(err)
	}
	logs := &meshtest.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	srv, err := coordinator.Open(context.Background(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	s := &served{addr: ln.Addr().String(), url: "https://" + ln.Addr().String(), logs: logs}
	if s.cred, err = adminclient.LoadCredential(filepath.Join(dir, coordinator.FileAdmin)); err != nil {
		t.Fatal(err)
	}
	if s.admin, err = adminclient.New(s.url, s.cred); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.admin.Close)
	return s
}

// dialAttacker opens a TLS connection the way anyone on the network can:
// no client certificate, no interest in who the server is.
func dialAttacker(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTricklingRequestBodyIsCutOff: a client that sends its headers and
// then trickles the body, a byte at a time, has its connection closed
// once the body deadline passes, instead of holding it (and a handler) for
// as long as it keeps trickling: on an endpoint anyone may reach without a
// credential, on a path that does not exist, and with the wrong method on
// the stream's path.
func TestTricklingRequestBodyIsCutOff(t *testing.T) {
	const deadline = 300 * time.Millisecond
	s := serveCoordinator(t, coordinator.Config{BodyReadTimeout: deadline})
	for _, target := range []string{"POST " + api.PathEnroll, "POST /v1/no-such-endpoint", "POST " + api.PathNetmap} {
		t.Run(target, func(t *testing.T) {
			conn := dialAttacker(t, s.addr)
			if _, err := fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: coordinator\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", target); err != nil {
				t.Fatal(err)
			}
			closed := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(conn) // returns when the server closes the connection
				closed <- b
			}()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			giveUp := time.After(10 * time.Second)
			for {
				select {
				case answer := <-closed:
					t.Logf("closed with %q", firstLine(answer))
					if bytes.HasPrefix(answer, []byte("HTTP/1.1 2")) {
						t.Errorf("a trickled body was accepted: %q", firstLine(answer))
					}
					return
				case <-giveUp:
					t.Fatalf("the coordinator still reads a body trickled for 10s; want the connection closed after the %s body deadline", deadline)
				case <-tick.C:
					_, _ = conn.Write([]byte(" ")) // fails once the server has closed; the reader says so
				}
			}
		})
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// TestIdleKeepAliveConnectionIsClosed: a connection kept alive after its
// request and then left silent is closed after the idle timeout.
func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := serveCoordinator(t, coordinator.Config{IdleTimeout: idle})
	conn := dialAttacker(t, s.addr)
	br := bufio.NewReader(conn)
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: coordinator\r\n\r\n", api.PathAdminNodes); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Close {
		t.Fatalf("admin request without a credential: HTTP %d, close=%v; want 401 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("an idle keep-alive connection is still open after 10s; want it closed after %s", idle)
	}
	if err == nil {
		t.Fatal("the server sent bytes on an idle connection")
	}
}

// TestNetmapStreamOutlivesRequestTimeouts: the netmap stream is one
// long request; neither the body deadline nor the idle timeout cuts it.
func TestNetmapStreamOutlivesRequestTimeouts(t *testing.T) {
	const short = 300 * time.Millisecond
	s := serveCoordinator(t, coordinator.Config{BodyReadTimeout: short, IdleTimeout: short})
	l := newLights(t, s.url, s.admin)
	a := l.start("a")
	l.waitFor("a's first map", func() bool { return a.Netmap() != nil })
	time.Sleep(5 * short)
	l.start("b")
	l.waitFor("a to see b", func() bool { return peersOf(a) == "b" })
	if n := strings.Count(s.logs.String(), `msg="netmap stream open" node=a `); n != 1 {
		t.Errorf("a's netmap stream was opened %d times; want once, never cut", n)
	}
}

// TestConnectionsBeyondTheLimitWait: with every connection slot held, a
// new connection gets no answer until one closes.
func TestConnectionsBeyondTheLimitWait(t *testing.T) {
	s := serveCoordinator(t, coordinator.Config{MaxConns: 1, ReadHeaderTimeout: time.Minute})
	hog, err := net.Dial("tcp", s.addr) // holds the only slot, silently
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = s.admin.Nodes(ctx)
	cancel()
	if err == nil {
		t.Fatal("a request got through while another connection held the only slot")
	}
	hog.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.admin.Nodes(ctx); err != nil {
		t.Fatalf("once the slot was free: %v", err)
	}
}

// TestAdminCertificateExpiryEndsItsConnection: a keep-alive connection
// opened with an admin certificate carries no admin request once that
// certificate has expired by the coordinator's clock.
func TestAdminCertificateExpiryEndsItsConnection(t *testing.T) {
	var skew atomic.Int64
	s := serveCoordinator(t, coordinator.Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	svid, err := s.cred.SVID()
	if err != nil {
		t.Fatal(err)
	}
	td := svid.ID.TrustDomain()
	tr := &http.Transport{TLSClientConfig: identity.ClientTLSConfig(identity.NewRotatingSVID(svid), s.cred.TrustBundle(td), identity.CoordinatorID(td))}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() (code int, body string, reused bool) {
		t.Helper()
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, s.url+api.PathAdminNodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), reused
	}
	if code, body, _ := get(); code != http.StatusOK {
		t.Fatalf("admin request: HTTP %d %s", code, body)
	}
	skew.Store(int64(time.Until(svid.Certificates[0].NotAfter) + time.Minute))
	code, body, reused := get()
	if !reused {
		t.Fatal("the second request did not ride the first one's connection; the test proves nothing")
	}
	if code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Fatalf("admin request after the admin certificate expired: HTTP %d %s; want 401 saying it expired", code, body)
	}
}
