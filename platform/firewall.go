package platform

import (
	"fmt"
	"net/netip"
	"slices"
)

// FirewallTable is the name of the nftables table (family inet) that holds
// every rule mcpmesh installs. Owning a whole table, rather than adding
// rules to chains that other tools manage, lets the node replace its rules
// in one transaction, remove them all on exit, and never touch anyone
// else's.
const FirewallTable = "mcpmesh"

// FirewallRules is the host firewall a node wants. The rules only ever drop;
// they never accept what another firewall on the host drops.
type FirewallRules struct {
	// MeshInterface is the mesh's network interface (mcpmesh0). Packets
	// addressed to MeshAddrs are dropped unless they arrive on it or on
	// loopback: Linux would otherwise accept a packet for the mesh address
	// on any interface, so a host on the LAN that routes the mesh prefix to
	// this node would reach the node's proxy without WireGuard.
	MeshInterface string
	// MeshAddrs are this node's own mesh addresses.
	MeshAddrs []netip.Addr
	// MeshPrefixes are the mesh's address ranges. A packet whose source is
	// in them is dropped unless it arrives on the mesh interface or on
	// loopback: the serving node names a caller by its mesh source address,
	// so that address must never be forgeable from the LAN.
	MeshPrefixes []netip.Prefix
	// LockdownPorts are TCP ports that accept packets from loopback only:
	// the ports of upstream MCP servers served with `serve --lockdown`, so
	// that a server that also binds 0.0.0.0 is reachable through the mesh
	// alone.
	LockdownPorts []uint16
}

// Validate reports what is wrong with r before any rule is installed, so a
// bad request never leaves the host half-configured.
func (r FirewallRules) Validate() error {
	if r.MeshInterface == "" && (len(r.MeshAddrs) > 0 || len(r.MeshPrefixes) > 0) {
		return fmt.Errorf("firewall: mesh addresses without a mesh interface")
	}
	if len(r.MeshInterface) >= 16 { // IFNAMSIZ, with its NUL
		return fmt.Errorf("firewall: interface name %q is longer than 15 bytes", r.MeshInterface)
	}
	if r.MeshInterface == "lo" {
		return fmt.Errorf("firewall: the mesh interface cannot be loopback")
	}
	for _, a := range r.MeshAddrs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("firewall: invalid mesh address %v", a)
		}
	}
	for _, p := range r.MeshPrefixes {
		if !p.IsValid() || p.Addr().Is4In6() {
			return fmt.Errorf("firewall: invalid mesh prefix %v", p)
		}
	}
	for _, p := range r.LockdownPorts {
		if p == 0 {
			return fmt.Errorf("firewall: lockdown port 0")
		}
	}
	return nil
}

// normalized returns r with sorted, duplicate-free lists and unmapped
// addresses, so that equal intentions yield equal rule sets.
func (r FirewallRules) normalized() FirewallRules {
	out := FirewallRules{MeshInterface: r.MeshInterface}
	for _, a := range r.MeshAddrs {
		out.MeshAddrs = append(out.MeshAddrs, a.Unmap())
	}
	for _, p := range r.MeshPrefixes {
		out.MeshPrefixes = append(out.MeshPrefixes, p.Masked())
	}
	out.LockdownPorts = slices.Clone(r.LockdownPorts)
	slices.SortFunc(out.MeshAddrs, netip.Addr.Compare)
	out.MeshAddrs = slices.Compact(out.MeshAddrs)
	slices.SortFunc(out.MeshPrefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out.MeshPrefixes = slices.Compact(out.MeshPrefixes)
	slices.Sort(out.LockdownPorts)
	out.LockdownPorts = slices.Compact(out.LockdownPorts)
	return out
}
