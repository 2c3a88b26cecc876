// Package localapi is the node daemon's API for local tools (the CLI): a
// small route table served over a unix socket that only the node's user can
// open (0600). It defines the wire types and a client, and knows nothing of
// how the node computes them: the daemon plugs in a Backend.
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// Routes of the LocalAPI.
const (
	pathStatus   = "/localapi/v0/status"
	pathPing     = "/localapi/v0/ping"
	pathDown     = "/localapi/v0/down"
	pathExposure = "/localapi/v0/exposure"
	pathServe    = "/localapi/v0/serve"
)

// Status is what `mcpmesh status` shows.
type Status struct {
	Name          string       `json:"name"`
	ID            string       `json:"id"`
	Addresses     []netip.Addr `json:"addresses"`
	ListenPort    uint16       `json:"listenPort"`
	Coordinator   string       `json:"coordinator"`
	Connected     bool         `json:"connected"`
	ControlError  string       `json:"controlError,omitempty"`
	SVIDExpires   time.Time    `json:"svidExpires"`
	NetmapVersion uint64       `json:"netmapVersion"`
	NetmapExpires time.Time    `json:"netmapExpires"`
	// ServicesError says why the coordinator refused to publish the
	// services this node serves, when it did.
	ServicesError string `json:"servicesError,omitempty"`
	// NetmapExpired is set when the netmap expired without word from the
	// coordinator: the node then has no peers and denies every call.
	NetmapExpired bool         `json:"netmapExpired,omitempty"`
	Peers         []PeerStatus `json:"peers"`
	// Catalog is the services this node may call.
	Catalog []api.Service `json:"catalog"`
	// PolicyVersion is the version of the rules this node enforces for
	// the services it hosts (0: none, every call denied).
	PolicyVersion uint64 `json:"policyVersion"`
	// DataPlane says what carries the mesh's packets on this host.
	DataPlane string `json:"dataPlane"`
	// Firewall is the state of the host firewall the node manages, ""
	// when it manages none (userspace mode, or up --firewall=false).
	Firewall string `json:"firewall,omitempty"`
}

// PeerStatus is one peer as this node sees it.
type PeerStatus struct {
	Name          string         `json:"name"`
	ID            string         `json:"id"`
	Addresses     []netip.Addr   `json:"addresses"`
	Endpoint      netip.AddrPort `json:"endpoint"`
	LastHandshake time.Time      `json:"lastHandshake"`
	RxBytes       uint64         `json:"rxBytes"`
	TxBytes       uint64         `json:"txBytes"`
}

// PingResult is the answer to a ping.
type PingResult struct {
	Peer    string        `json:"peer"`
	Address netip.Addr    `json:"address"`
	RTT     time.Duration `json:"rtt"`
}

// ServeRequest publishes an MCP service as mesh-only (`mcpmesh serve`).
type ServeRequest struct {
	Name     string   `json:"name"`
	Tags     []string `json:"tags,omitempty"`
	Upstream string   `json:"upstream,omitempty"` // Streamable HTTP URL on loopback
	Stdio    string   `json:"stdio,omitempty"`    // command line of a stdio server
	// Lockdown drops packets to the upstream's port that arrive on any
	// interface but loopback, closing off a server that also binds
	// 0.0.0.0 (needs a node that manages the host firewall).
	Lockdown bool `json:"lockdown,omitempty"`
	// UpstreamUser is the local user (a name or a numeric uid) who must
	// serve the upstream's port. Without it the node trusts whoever
	// serves the port when it begins to serve the service (or, if nothing
	// listens yet, at the first connection): a user who got there first
	// would receive the calls. With it, the node never connects to the
	// port while another user holds it.
	UpstreamUser string `json:"upstreamUser,omitempty"`
}

// ServeResult says where the service is reachable on the mesh.
type ServeResult struct {
	Name     string   `json:"name"`
	Endpoint string   `json:"endpoint"`
	Warnings []string `json:"warnings,omitempty"`
	// UpstreamOwner says which local user serves an HTTP upstream's port
	// now, e.g. "ehr (uid 998)"; empty when nothing listens on it yet.
	// Shown to the admin, so that a port taken by the wrong user is seen
	// when the service is served, not after.
	UpstreamOwner string `json:"upstreamOwner,omitempty"`
}

// Backend is what the node daemon provides.
type Backend interface {
	Status() (*Status, error)
	Ping(ctx context.Context, peer string) (*PingResult, error)
	Serve(ctx context.Context, req ServeRequest) (*ServeResult, error)
	Unserve(ctx context.Context, name string) error
	// MCPForwarder carries a local client's MCP request to a mesh service
	// named by the {service} path value.
	MCPForwarder() http.Handler
	// Down asks the daemon to leave the mesh and exit.
	Down()
	// ScanExposure looks for MCP servers on this host reachable off the
	// mesh and reports them to the coordinator.
	ScanExposure(ctx context.Context) (*ExposureResult, error)
}

// ExposureResult is a scan and whether the coordinator has it.
type ExposureResult struct {
	Report api.ExposureReport `json:"report"`
	// ReportError says why the coordinator did not get the report (it is
	// sent again with the next periodic scan).
	ReportError string `json:"report_error,omitempty"`
}

// MCPPath is the LocalAPI path where a local client reaches mesh service
// name over Streamable HTTP (`mcpmesh connect` uses it).
func MCPPath(name string) string { return "/localapi/v0/mcp/" + url.PathEscape(name) }

// Listen opens the socket at path, replacing a stale one, readable and
// writable by the owner only.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("localapi: a node is already running on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("localapi: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("localapi: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("localapi: chmod %s: %w", path, err)
	}
	return ln, nil
}

// Handler returns the route table for b.
func Handler(b Backend, log *slog.Logger) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, st)
	})
	m.HandleFunc("POST "+pathPing, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		res, err := b.Ping(ctx, r.URL.Query().Get("peer"))
		if err != nil {
			writeErr(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, res)
	})
	m.HandleFunc("POST "+pathServe, func(w http.ResponseWriter, r *http.Request) {
		var req ServeRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("malformed request: %w", err))
			return
		}
		res, err := b.Serve(r.Context(), req)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, res)
	})
	m.HandleFunc("DELETE "+pathServe+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Unserve(r.Context(), r.PathValue("name")); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("POST "+pathExposure, func(w http.ResponseWriter, r *http.Request) {
		res, err := b.ScanExposure(r.Context())
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, res)
	})
	m.Handle("/localapi/v0/mcp/{service}", b.MCPForwarder())
	m.HandleFunc("POST "+pathDown, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		// The answer must be on its way before the daemon closes this
		// socket, or the CLI sees the connection drop instead of "ok".
		_ = http.NewResponseController(w).Flush()
		log.Info("down requested over LocalAPI")
		go b.Down()
	})
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // the CLI went away; nothing to do
}

func writeErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// Client talks to a node's LocalAPI.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Status fetches the node's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, http.MethodGet, pathStatus, nil, &st)
}

// Ping pings a peer by name through the mesh.
func (c *Client) Ping(ctx context.Context, peer string) (*PingResult, error) {
	var res PingResult
	return &res, c.do(ctx, http.MethodPost, pathPing, url.Values{"peer": {peer}}, &res)
}

// Serve publishes a mesh-only service on the node.
func (c *Client) Serve(ctx context.Context, req ServeRequest) (*ServeResult, error) {
	var res ServeResult
	return &res, c.doJSON(ctx, http.MethodPost, pathServe, req, &res)
}

// Unserve stops serving a service.
func (c *Client) Unserve(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, pathServe+"/"+url.PathEscape(name), nil, nil)
}

// HTTPClient is an HTTP client whose every connection goes to the node's
// socket, for Streamable HTTP to MCPPath (host "local").
func (c *Client) HTTPClient() *http.Client { return c.hc }

// ScanExposure runs the exposure audit on the node's host.
func (c *Client) ScanExposure(ctx context.Context) (*ExposureResult, error) {
	var res ExposureResult
	return &res, c.do(ctx, http.MethodPost, pathExposure, nil, &res)
}

// Down asks the node to exit.
func (c *Client) Down(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, pathDown, nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://local" + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	return c.roundTrip(req, out)
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://local"+path, body)
	if err != nil {
		return err
	}
	return c.roundTrip(req, out)
}

func (c *Client) roundTrip(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("no node is running with its socket at %s (start one with `mcpmesh up`, or pass --state): %w", c.socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("localapi: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("localapi: HTTP %d", resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("localapi: malformed answer: %w", err)
	}
	return nil
}
