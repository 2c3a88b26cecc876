package node

import (
	"context"
	"fmt"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Status implements localapi.Backend: the node, its identity and every peer
// with what WireGuard knows of it.
func (n *Node) Status() (*localapi.Status, error) {
	wg, err := n.tun.Peers()
	if err != nil {
		return nil, fmt.Errorf("node: tunnel status: %w", err)
	}
	byKey := make(map[tunnel.Key]tunnel.PeerStatus, len(wg))
	for _, p := range wg {
		byKey[p.PublicKey] = p
	}
	// The firewall check takes fwMu then n.mu: before n.mu is held here.
	fw := ""
	if n.cfg.Firewall != nil {
		fw = "table inet mcpmesh in place"
		if err := n.FirewallOK(); err != nil {
			fw = "NOT as wanted, repairing: " + err.Error()
		}
	}
	dp := "userspace (wireguard-go + gVisor netstack; no interface on the host)"
	if t, ok := n.tun.(interface {
		Name() string
		Engine() string
	}); ok {
		dp = fmt.Sprintf("interface %s (%s)", t.Name(), t.Engine())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.enforceExpiryLocked()
	st := &localapi.Status{
		DataPlane:     dp,
		Firewall:      fw,
		Name:          n.enr.Name,
		ID:            n.enr.ID,
		Addresses:     n.tun.Addresses(),
		ListenPort:    n.tun.ListenPort(),
		Coordinator:   n.enr.Coordinator,
		Connected:     n.mu.connected,
		SVIDExpires:   n.mu.svidExpires,
		NetmapVersion: n.mu.held.Version,
		NetmapExpires: n.mu.held.Expires,
		NetmapExpired: n.mu.netmap != n.mu.held,
	}
	st.Catalog = append([]api.Service{}, n.mu.netmap.Catalog...)
	if n.mu.bundle != nil {
		st.PolicyVersion = n.mu.bundle.Version
	}
	if n.mu.servicesErr != nil {
		st.ServicesError = n.mu.servicesErr.Error()
	}
	if n.mu.controlErr != nil {
		st.ControlError = n.mu.controlErr.Error()
	}
	for _, p := range n.mu.netmap.SortedPeers() {
		ps := localapi.PeerStatus{Name: p.Name, ID: p.ID, Addresses: p.Addresses, Endpoint: p.Endpoint}
		if k, err := tunnel.ParseKey(p.WireGuardKey); err == nil {
			w := byKey[k]
			ps.LastHandshake, ps.RxBytes, ps.TxBytes = w.LastHandshake, w.RxBytes, w.TxBytes
			if w.Endpoint.IsValid() {
				ps.Endpoint = w.Endpoint
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}

// Ping implements localapi.Backend: one ICMP echo through the tunnel to the
// peer's mesh IPv4 (or its first address).
func (n *Node) Ping(ctx context.Context, name string) (*localapi.PingResult, error) {
	n.mu.Lock()
	n.enforceExpiryLocked()
	p, ok := n.mu.netmap.Peers[name]
	expired := n.expiredErrLocked()
	n.mu.Unlock()
	if expired != nil {
		return nil, expired
	}
	if !ok {
		return nil, fmt.Errorf("no peer named %q in this node's netmap (see `mcpmesh status`)", name)
	}
	if len(p.Addresses) == 0 {
		return nil, fmt.Errorf("peer %q has no mesh address", name)
	}
	addr := p.Addresses[0]
	rtt, err := n.tun.Ping(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("ping %s (%s): %w", name, addr, err)
	}
	return &localapi.PingResult{Peer: name, Address: addr, RTT: rtt}, nil
}
