// Package adminclient is the admin's side of the control API, used by the
// CLI and by test harnesses: it authenticates with the admin credential
// (mTLS with an admin SVID) and verifies the coordinator by SPIFFE ID.
package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
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

// Services lists every published service.
func (c *Client) Services(ctx context.Context) ([]api.Service, error) {
	var resp api.ServiceList
	if err := api.Do(ctx, c.hc, http.MethodGet, c.base.JoinPath(api.PathAdminServices).String(), nil, &resp); err != nil {
		return nil, err
	}
	return resp.Services, nil
}

// PolicyErrors extracts the positioned errors from a refused check or
// apply, or nil when err is something else.
func PolicyErrors(err error) []api.PolicyError {
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
		return nil
	}
	var body api.PolicyErrors
	if json.Unmarshal(se.Body, &body) != nil {
		return nil
	}
	return body.Errors
}

// CheckPolicy compiles and tests a policy on the coordinator without
// storing it.
func (c *Client) CheckPolicy(ctx context.Context, src api.PolicySource) (*api.PolicyCheckResponse, error) {
	var resp api.PolicyCheckResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminPolicyCheck).String(), src, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ApplyPolicy stores a policy as a new version; it is refused if it does
// not compile or a test fails.
func (c *Client) ApplyPolicy(ctx context.Context, src api.PolicySource) (*api.PolicyCheckResponse, error) {
	var resp api.PolicyCheckResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminPolicy).String(), src, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Policy fetches a version (0: the current one).
func (c *Client) Policy(ctx context.Context, version uint64) (*api.PolicyVersion, error) {
	u := c.base.JoinPath(api.PathAdminPolicy)
	if version > 0 {
		u.RawQuery = "version=" + strconv.FormatUint(version, 10)
	}
	var resp api.PolicyVersion
	if err := api.Do(ctx, c.hc, http.MethodGet, u.String(), nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// PolicyHistory lists every version, newest first.
func (c *Client) PolicyHistory(ctx context.Context) ([]api.PolicyVersion, error) {
	var resp []api.PolicyVersion
	if err := api.Do(ctx, c.hc, http.MethodGet, c.base.JoinPath(api.PathAdminPolicyHistory).String(), nil, &resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// RollbackPolicy applies an old version again, as a new version.
func (c *Client) RollbackPolicy(ctx context.Context, version uint64) (*api.PolicyCheckResponse, error) {
	var resp api.PolicyCheckResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminPolicyRollback).String(), api.RollbackRequest{Version: version}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ExplainPolicy asks how the current policy decides one call.
func (c *Client) ExplainPolicy(ctx context.Context, req api.ExplainRequest) (*api.ExplainResponse, error) {
	var resp api.ExplainResponse
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminPolicyExplain).String(), req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Audit queries the audit trail, newest first.
func (c *Client) Audit(ctx context.Context, q api.AuditQuery) ([]api.AuditEvent, error) {
	var resp []api.AuditEvent
	if err := api.Do(ctx, c.hc, http.MethodPost, c.base.JoinPath(api.PathAdminAudit).String(), q, &resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Exposure returns every node's latest exposure report.
func (c *Client) Exposure(ctx context.Context) ([]api.ExposureReport, error) {
	var resp []api.ExposureReport
	if err := api.Do(ctx, c.hc, http.MethodGet, c.base.JoinPath(api.PathAdminExposure).String(), nil, &resp); err != nil {
		return nil, err
	}
	return resp, nil
}
