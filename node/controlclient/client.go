// Package controlclient is the node's side of the control API: enrollment
// with a join token, SVID renewal, endpoint updates and the netmap stream
// with reconnect, backoff and signature checks. It hands verified netmaps to
// the node and knows nothing of tunnels or MCP.
package controlclient

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
)

// ParseURL checks a coordinator URL: https only, with a host.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("controlclient: coordinator URL %q: %w", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("controlclient: coordinator URL %q must look like https://HOST:PORT", raw)
	}
	return u, nil
}

// Enroll joins the mesh with a join token. It trusts the coordinator only if
// it presents the CA whose fingerprint the token carries, and checks that
// the bundle it answers with is that CA.
func Enroll(ctx context.Context, coordinator string, tok identity.Token, req api.EnrollRequest) (*api.EnrollResponse, error) {
	u, err := ParseURL(coordinator)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: identity.BootstrapTLSConfig(tok.CA), ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	req.CapVer = api.CapabilityVersion
	req.Token = tok.String()
	var resp api.EnrollResponse
	if err := api.Do(ctx, hc, http.MethodPost, u.JoinPath(api.PathEnroll).String(), req, &resp); err != nil {
		return nil, fmt.Errorf("controlclient: enroll: %w", err)
	}
	roots, err := identity.ParseCertsPEM(resp.Bundle)
	if err != nil {
		return nil, fmt.Errorf("controlclient: enroll: bundle: %w", err)
	}
	found := false
	for _, r := range roots {
		if identity.FingerprintOf(r) == tok.CA {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("controlclient: enroll: %w: the bundle does not contain the token's CA", identity.ErrCAMismatch)
	}
	if len(resp.NetmapKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("controlclient: enroll: netmap key has %d bytes", len(resp.NetmapKey))
	}
	return &resp, nil
}

// Config is what an enrolled node's client needs.
type Config struct {
	URL       string
	Node      string // the node's name, the recipient of its netmaps
	SVID      *identity.RotatingSVID
	Bundle    *x509bundle.Bundle
	NetmapKey ed25519.PublicKey
	Logger    *slog.Logger
}

// Client talks to the coordinator with the node's SVID (mTLS). Renewing the
// SVID (RotatingSVID.Set) takes effect on the next connection without
// rebuilding the client.
type Client struct {
	base      *url.URL
	node      string
	netmapKey ed25519.PublicKey
	log       *slog.Logger
	hc        *http.Client // requests with a timeout
	stream    *http.Client // the long-lived netmap stream

	// Counters of accepted netmap messages, for status and benchmarks.
	messages, bytes atomic.Uint64
}

// Stats reports how many netmap messages were accepted and their total
// size on the wire (heartbeats excluded).
func (c *Client) Stats() (messages, bytes uint64) { return c.messages.Load(), c.bytes.Load() }

// New builds a client. It does not connect.
func New(cfg Config) (*Client, error) {
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if len(cfg.NetmapKey) != ed25519.PublicKeySize {
		return nil, errors.New("controlclient: netmap key missing")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	td := cfg.Bundle.TrustDomain()
	tc := identity.ClientTLSConfig(cfg.SVID, cfg.Bundle, identity.CoordinatorID(td))
	// A TLS connection proves the SVID it was opened with: the stream, which
	// lives long, always opens a fresh one, and after a renewal the idle
	// request connections are dropped (SVIDRenewed), so no request rides a
	// session opened with an old SVID for long.
	newTransport := func(keepAlive bool) *http.Transport {
		return &http.Transport{TLSClientConfig: tc.Clone(), DisableKeepAlives: !keepAlive, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: time.Minute}
	}
	return &Client{
		base:      u,
		node:      cfg.Node,
		netmapKey: cfg.NetmapKey,
		log:       log,
		hc:        &http.Client{Transport: newTransport(true), Timeout: 30 * time.Second},
		stream:    &http.Client{Transport: newTransport(false)},
	}, nil
}

// SVIDRenewed drops idle connections opened with the previous SVID.
func (c *Client) SVIDRenewed() { c.hc.CloseIdleConnections() }

// Close releases idle connections.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
	c.stream.CloseIdleConnections()
}

// Renew asks for a new SVID for the node's identity.
func (c *Client) Renew(ctx context.Context, csr []byte) (*api.RenewResponse, error) {
	var resp api.RenewResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathRenew).String(), api.RenewRequest{CSR: csr}, &resp); err != nil {
		return nil, fmt.Errorf("controlclient: renew: %w", err)
	}
	return &resp, nil
}

// SetEndpoint tells the coordinator where this node's WireGuard listens.
func (c *Client) SetEndpoint(ctx context.Context, info api.EndpointInfo) error {
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathEndpoints).String(), info, nil); err != nil {
		return fmt.Errorf("controlclient: set endpoint: %w", err)
	}
	return nil
}

// SetServices publishes the whole set of services this node serves.
func (c *Client) SetServices(ctx context.Context, svcs []api.ServiceSpec) error {
	if svcs == nil {
		svcs = []api.ServiceSpec{}
	}
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathServices).String(), api.ServicesRequest{Services: svcs}, nil); err != nil {
		return fmt.Errorf("controlclient: publish services: %w", err)
	}
	return nil
}

// TrustDomainOf learns the trust domain of the coordinator at URL from its
// CA, which must be the one the token names. A new node needs it to ask for
// an SVID with the right SPIFFE ID before it holds any trust bundle.
func TrustDomainOf(ctx context.Context, coordinator string, tok identity.Token) (spiffeid.TrustDomain, error) {
	var td spiffeid.TrustDomain
	u, err := ParseURL(coordinator)
	if err != nil {
		return td, err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := tls.Dialer{Config: identity.BootstrapTLSConfig(tok.CA)}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", host)
	if err != nil {
		return td, fmt.Errorf("controlclient: reach coordinator at %s: %w", host, err)
	}
	defer conn.Close()
	for _, c := range conn.(*tls.Conn).ConnectionState().PeerCertificates {
		if identity.FingerprintOf(c) != tok.CA {
			continue
		}
		for _, uri := range c.URIs {
			if id, err := spiffeid.FromURI(uri); err == nil {
				return id.TrustDomain(), nil
			}
		}
	}
	return td, fmt.Errorf("controlclient: the coordinator's CA carries no SPIFFE trust domain")
}

// ReportExposure sends this node's exposure report; the coordinator keeps
// the latest for `mcpmesh audit exposure --all`.
func (c *Client) ReportExposure(ctx context.Context, r api.ExposureReport) error {
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathExposure).String(), r, nil); err != nil {
		return fmt.Errorf("controlclient: report exposure: %w", err)
	}
	return nil
}

// ShipAudit sends audit events and returns the highest sequence of the
// batch, every event of which the coordinator then holds.
func (c *Client) ShipAudit(ctx context.Context, evs []api.AuditEvent) (uint64, error) {
	var ack api.AuditAck
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAudit).String(), api.AuditBatch{Events: evs}, &ack); err != nil {
		return 0, fmt.Errorf("controlclient: ship audit: %w", err)
	}
	return ack.Stored, nil
}
