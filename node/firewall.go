package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Firewall is the host firewall the node keeps in step with its mesh
// addresses and locked-down services. platform.Firewall implements it with
// nftables; it is an interface so the node does not care how.
type Firewall interface {
	// Apply replaces the node's rules with exactly r.
	Apply(r platform.FirewallRules) error
	// Check reports how the installed rules differ from r.
	Check(r platform.FirewallRules) error
	// Remove deletes every rule the node installed.
	Remove() error
}

// FirewallCheckEvery is how often the node compares the installed rules
// with what it wants and repairs them; a rule deleted by hand or by another
// tool's flush is back within this long.
const FirewallCheckEvery = 10 * time.Second

// ErrFirewall marks errors of the host firewall, so the CLI can say how to
// run without it.
var ErrFirewall = errors.New("host firewall")

// errNoFirewall explains why --lockdown cannot be honoured.
var errNoFirewall = errors.New("--lockdown needs the node to manage the host firewall: run the node as root in TUN mode (mcpmesh up --tun)")

// firewallRules is what the host firewall should hold for the services in
// served: the mesh addresses guarded when the tunnel has a real interface,
// and the ports of locked-down upstreams.
func (n *Node) firewallRules(served []localapi.ServeRequest) (platform.FirewallRules, error) {
	var r platform.FirewallRules
	if iface, ok := n.tun.(interface{ Name() string }); ok {
		addrs := n.tun.Addresses()
		r.MeshInterface = iface.Name()
		r.MeshAddrs = addrs
		r.MeshPrefixes = tunnel.MeshPrefixes(addrs)
	}
	for _, s := range served {
		if !s.Lockdown {
			continue
		}
		port, err := lockdownPort(s)
		if err != nil {
			return r, err
		}
		r.LockdownPorts = append(r.LockdownPorts, port)
	}
	return r, nil
}

// lockdownPort is the TCP port of a locked-down service's upstream.
func lockdownPort(s localapi.ServeRequest) (uint16, error) {
	if s.Upstream == "" {
		return 0, fmt.Errorf("service %s: --lockdown applies to an --upstream server's port; a --stdio server listens on no port", s.Name)
	}
	u, err := url.Parse(s.Upstream)
	if err != nil {
		return 0, fmt.Errorf("service %s: upstream %q: %w", s.Name, s.Upstream, err)
	}
	p := u.Port()
	if p == "" {
		switch u.Scheme {
		case "https":
			p = "443"
		default:
			p = "80"
		}
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("service %s: upstream %q has no valid port", s.Name, s.Upstream)
	}
	return uint16(port), nil
}

// applyFirewall installs the rules for served. The caller holds n.fwMu, so
// the rules installed always follow the order of the changes.
func (n *Node) applyFirewall(served []localapi.ServeRequest) error {
	if n.cfg.Firewall == nil {
		return nil
	}
	r, err := n.firewallRules(served)
	if err != nil {
		return err
	}
	if err := n.cfg.Firewall.Apply(r); err != nil {
		return fmt.Errorf("node: %w: %w", ErrFirewall, err)
	}
	return nil
}

// runFirewallCheck repairs the host firewall when its rules drift from what
// the node wants, until ctx ends.
func (n *Node) runFirewallCheck(ctx context.Context) {
	every(ctx, FirewallCheckEvery, func() {
		n.fwMu.Lock()
		r, err := n.firewallRules(n.servedNow())
		if err == nil {
			if drift := n.cfg.Firewall.Check(r); drift != nil {
				n.log.Warn("host firewall changed outside mcpmesh; repairing", "drift", drift)
				err = n.cfg.Firewall.Apply(r)
			}
		}
		n.fwMu.Unlock()
		if err != nil {
			n.log.Error("host firewall not repaired", "err", err)
		}
	})
}

// every calls fn each period until ctx ends, the first time one period
// after the start.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// FirewallOK reports whether the host firewall holds what the node wants,
// for the exposure audit: a lockdown is only claimed when it is in place.
func (n *Node) FirewallOK() error {
	if n.cfg.Firewall == nil {
		return errNoFirewall
	}
	n.fwMu.Lock()
	defer n.fwMu.Unlock()
	r, err := n.firewallRules(n.servedNow())
	if err != nil {
		return err
	}
	return n.cfg.Firewall.Check(r)
}

// startFirewall installs the rules for the saved services, replacing
// whatever an earlier run left (a crash leaves its table in place, which
// keeps the host closed until now).
func (n *Node) startFirewall() error {
	if n.cfg.Firewall == nil {
		return nil
	}
	saved, err := n.loadServices()
	if err != nil {
		return err
	}
	n.fwMu.Lock()
	defer n.fwMu.Unlock()
	if err := n.applyFirewall(saved); err != nil {
		// A saved service whose lockdown cannot be expressed must not
		// keep the mesh addresses unguarded.
		r, _ := n.firewallRules(nil)
		if err2 := n.cfg.Firewall.Apply(r); err2 != nil {
			return err
		}
		n.log.Error("saved lockdowns not installed", "err", err)
	}
	return nil
}

// removeFirewall takes the node's rules off the host as it exits, all but
// the lockdowns: an upstream served with --lockdown binds every interface
// and goes on running while the node is stopped or upgraded, and must not
// open to the LAN meanwhile. Unserving the service, or the next start,
// lifts them; without lockdowns the table goes.
func (n *Node) removeFirewall() {
	if n.cfg.Firewall == nil {
		return
	}
	n.fwMu.Lock()
	defer n.fwMu.Unlock()
	r, err := n.firewallRules(n.servedNow())
	if err == nil && len(r.LockdownPorts) > 0 {
		err = n.cfg.Firewall.Apply(platform.FirewallRules{LockdownPorts: r.LockdownPorts})
		if err == nil {
			n.log.Info("host firewall: the lockdowns stay while the node is stopped", "ports", r.LockdownPorts)
			return
		}
		n.log.Error("lockdowns not kept after exit", "err", err)
	}
	if err := n.cfg.Firewall.Remove(); err != nil {
		n.log.Error("host firewall rules not removed", "err", err)
	}
}
