package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/netstack"
)

// silentBind is the UDP transport, until silence: from then on nothing
// the node sends leaves and nothing sent to it arrives, as for a laptop
// put to sleep or a host gone off the network.
type silentBind struct {
	conn.Bind
	silent atomic.Bool
}

func (b *silentBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	for i, f := range fns {
		fns[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			for {
				n, err := f(packets, sizes, eps)
				if err != nil || n == 0 || !b.silent.Load() {
					return n, err
				}
			}
		}
	}
	return fns, actual, err
}

func (b *silentBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.silent.Load() {
		return nil
	}
	return b.Bind.Send(bufs, ep)
}

// A caller that vanishes in silence, with its session's event stream open,
// does not hold that stream (and with it its session and session slot)
// on the serving node for good: keep-alive finds it gone, and the stream
// to the upstream ends.
func TestVanishedCallersStreamEndsOnTheServingNode(t *testing.T) {
	streamOpen, streamEnded := make(chan struct{}, 4), make(chan struct{}, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			var msg struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			if err := json.NewDecoder(r.Body).Decode(&msg); err != nil || msg.ID == nil {
				w.WriteHeader(http.StatusAccepted) // a notification
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if msg.Method != "initialize" { // server/discover among them: the client falls back
				io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(msg.ID)+`,"error":{"code":-32601,"message":"method not found"}}`)
				return
			}
			w.Header().Set("Mcp-Session-Id", "sess-1")
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(msg.ID)+`,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"ehr","version":"1"}}}`)
		case http.MethodGet:
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			streamOpen <- struct{}{}
			select {
			case <-r.Context().Done():
				streamEnded <- struct{}{}
			case <-time.After(30 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	}))
	defer up.Close()

	m := meshtest.New(t, meshtest.Options{})
	ka := netstack.Keepalive{Idle: 500 * time.Millisecond, Interval: 250 * time.Millisecond, Count: 2}
	srv := m.AddNodeWithTunnel("ehr-server", func(c tunnel.Config, log *slog.Logger) (tunnel.Tunnel, error) {
		return netstack.New(c, netstack.WithLogger(log), netstack.WithKeepalive(ka))
	})
	if _, err := srv.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up.URL, Tags: []string{"tag:phi"}}); err != nil {
		t.Fatal(err)
	}
	bind := &silentBind{Bind: conn.NewDefaultBind()}
	laptop := m.AddNodeWithTunnel("ward-laptop", func(c tunnel.Config, log *slog.Logger) (tunnel.Tunnel, error) {
		return netstack.New(c, netstack.WithLogger(log), netstack.WithBind(bind))
	})
	applyPolicy(t, m, ehrPolicy)
	m.WaitPeers(laptop, srv.Name())
	m.WaitCatalog(laptop, "ehr")
	waitFor(t, "the server's rules", func() bool { p, _ := srv.Policy(); return p != nil })
	if _, err := meshClient(t, laptop, "ehr"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-streamOpen:
	case <-time.After(10 * time.Second):
		t.Fatal("the client opened no event stream")
	}

	bind.silent.Store(true)
	select {
	case <-streamEnded:
	case <-time.After(15 * time.Second):
		t.Fatal("the vanished caller's event stream to the upstream still open 15 s later (keep-alive: 0.5 s idle, 2 probes 0.25 s apart)")
	}
}
