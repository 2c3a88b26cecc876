package meshtest

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
)

// LightNode is a node without a tunnel: real enrollment, a real mTLS netmap
// stream and real signature checks, so one process can hold thousands of
// them (control-plane tests and benchmarks).
type LightNode struct {
	Name   string
	Client *controlclient.Client

	mu     sync.Mutex
	netmap *controlclient.Netmap
	last   *api.NetmapMessage
	notify chan struct{}
}

// EnrollLight enrolls a lightweight node with token.
func EnrollLight(ctx context.Context, url, token, name string) (*LightNode, error) {
	tok, err := identity.ParseToken(token)
	if err != nil {
		return nil, err
	}
	wg, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	td, err := controlclient.TrustDomainOf(ctx, url, tok)
	if err != nil {
		return nil, err
	}
	id, err := identity.NodeID(td, name)
	if err != nil {
		return nil, err
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	resp, err := controlclient.Enroll(ctx, url, tok, api.EnrollRequest{
		Hostname:     name,
		WireGuardKey: base64.StdEncoding.EncodeToString(wg.PublicKey().Bytes()),
		CSR:          csr,
		Endpoint:     api.EndpointInfo{Advertise: "127.0.0.1:9"},
	})
	if err != nil {
		return nil, err
	}
	certs, err := identity.ParseCertsPEM(resp.SVID)
	if err != nil {
		return nil, err
	}
	roots, err := identity.ParseCertsPEM(resp.Bundle)
	if err != nil {
		return nil, err
	}
	cred := &identity.Credential{Certs: certs, Key: key, Roots: roots}
	svid, err := cred.SVID()
	if err != nil {
		return nil, err
	}
	c, err := controlclient.New(controlclient.Config{
		URL: url, Node: name, SVID: identity.NewRotatingSVID(svid),
		Bundle: x509bundle.FromX509Authorities(td, roots), NetmapKey: ed25519.PublicKey(resp.NetmapKey),
	})
	if err != nil {
		return nil, err
	}
	return &LightNode{Name: name, Client: c, notify: make(chan struct{}, 1)}, nil
}

// Run streams netmaps until ctx ends.
func (l *LightNode) Run(ctx context.Context) error { return l.Client.Run(ctx, l) }

// Version implements controlclient.Handler.
func (l *LightNode) Version() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.netmap == nil {
		return 0
	}
	return l.netmap.Version
}

// Apply implements controlclient.Handler.
func (l *LightNode) Apply(m *api.NetmapMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next, err := l.netmap.Apply(l.Name, m)
	if err != nil {
		return err
	}
	l.netmap, l.last = next, m
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return nil
}

// Connected implements controlclient.Handler.
func (l *LightNode) Connected(context.Context) error { return nil }

// Netmap returns the current view (nil before the first map).
func (l *LightNode) Netmap() *controlclient.Netmap {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.netmap == nil {
		return nil
	}
	return l.netmap.Clone()
}

// Last is the last message applied.
func (l *LightNode) Last() *api.NetmapMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Updated is signalled after each applied message.
func (l *LightNode) Updated() <-chan struct{} { return l.notify }

// WaitPeerCount waits for the view to hold n peers.
func (l *LightNode) WaitPeerCount(ctx context.Context, n int) error {
	for {
		if nm := l.Netmap(); nm != nil && len(nm.Peers) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			got := -1
			if nm := l.Netmap(); nm != nil {
				got = len(nm.Peers)
			}
			return fmt.Errorf("%s: %d peers, want %d: %w", l.Name, got, n, ctx.Err())
		case <-l.notify:
		}
	}
}
