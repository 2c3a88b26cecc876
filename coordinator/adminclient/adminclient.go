// Package adminclient is the admin's side of the control API, used by the
// CLI and by test harnesses: it authenticates with the admin credential
// (mTLS with an admin SVID) and verifies the coordinator by SPIFFE ID.
package adminclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
)

// Client is an authenticated admin connection to one coordinator.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// LoadCredential reads an admin credential file (admin.pem).
func LoadCredential(path string) (*identity.Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("adminclient: read admin credential: %w", err)
	}
	c, err := identity.ParseCredential(b)
	if err != nil {
		return nil, fmt.Errorf("adminclient: %s: %w", path, err)
	}
	return c, nil
}

// New returns a client for the coordinator at rawURL.
func New(rawURL string, cred *identity.Credential) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("adminclient: coordinator URL %q must look like https://HOST:PORT", rawURL)
	}
	id, err := cred.ID()
	if err != nil {
		return nil, err
	}
	svid, err := cred.SVID()
	if err != nil {
		return nil, err
	}
	td := id.TrustDomain()
	tc := identity.ClientTLSConfig(identity.NewRotatingSVID(svid), cred.TrustBundle(td), identity.CoordinatorID(td))
	return &Client{base: u, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// CreateToken asks for a join token.
func (c *Client) CreateToken(ctx context.Context, req api.TokenCreateRequest) (*api.TokenCreateResponse, error) {
	var resp api.TokenCreateResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminTokens).String(), req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Nodes lists every node.
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var resp api.NodeList
	if err := api.Do(ctx, c.hc, http.MethodGet, c.base.JoinPath(api.PathAdminNodes).String(), nil, &resp); err != nil {
		return nil, err
	}
	return resp.Nodes, nil
}

// Revoke revokes a node by name.
func (c *Client) Revoke(ctx context.Context, name string) error {
	return api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminRevoke, name).String(), nil, nil)
}
