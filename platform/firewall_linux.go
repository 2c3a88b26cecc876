package platform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The table's two base chains filter just before the usual filter
// priority, so our drops happen whatever other tables accept: input, for
// packets to this host, and forward, for packets the host routes on.
const (
	firewallChain = "input"
	forwardChain  = "forward"
)

// Firewall installs FirewallRules through nftables (netlink; no nft binary
// needed). Each call opens its own netlink connection, so a Firewall is safe
// for concurrent use and holds no socket between calls.
type Firewall struct {
	opts []nftables.ConnOption
}

// FirewallOption configures a Firewall.
type FirewallOption func(*Firewall)

// FirewallInNamespace makes the Firewall manage the network namespace open
// at fd instead of the caller's, so tests can firewall a namespace they
// created without moving the process into it.
func FirewallInNamespace(fd int) FirewallOption {
	return func(f *Firewall) { f.opts = append(f.opts, nftables.WithNetNSFd(fd)) }
}

// NewFirewall returns a Firewall. It does not touch the host until Apply.
func NewFirewall(opts ...FirewallOption) *Firewall {
	f := &Firewall{}
	for _, o := range opts {
		o(f)
	}
	return f
}

func (f *Firewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New(f.opts...)
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyINet}
}

// Apply makes the host's mcpmesh table hold exactly the rules for r, in one
// nftables transaction: whatever the table held before (rules of an
// earlier run that crashed, or rules someone changed by hand) is replaced,
// and a failure leaves the previous table in place.
func (f *Firewall) Apply(r FirewallRules) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := table()
	c.AddTable(t) // so the delete below finds a table to delete
	c.DelTable(t)
	c.AddTable(t)
	for _, cs := range chainsFor(t, r.normalized()) {
		ch := c.AddChain(cs.chain)
		for _, rule := range cs.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: rule.exprs, UserData: rule.userData()})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w", FirewallTable, err)
	}
	return nil
}

// chainRules is one base chain and the rules it holds.
type chainRules struct {
	chain *nftables.Chain
	rules []nftRule
}

// chainsFor is what Apply installs for r (normalized), chain by chain.
func chainsFor(t *nftables.Table, r FirewallRules) []chainRules {
	return []chainRules{
		{baseChain(t, firewallChain, nftables.ChainHookInput), buildRules(r)},
		{baseChain(t, forwardChain, nftables.ChainHookForward), buildForwardRules(r)},
	}
}

func baseChain(t *nftables.Table, name string, hook *nftables.ChainHook) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10),
		Policy:   &accept,
	}
}

// Check reports how the installed table differs from what Apply(r) would
// install: missing table or chain, or rules added, removed or replaced. A
// node calls it periodically and re-applies on drift.
func (f *Firewall) Check(r FirewallRules) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	t, err := c.ListTableOfFamily(FirewallTable, nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("firewall: table inet %s is missing: %w", FirewallTable, err)
	}
	for _, cs := range chainsFor(t, r.normalized()) {
		if err := checkChain(c, t, cs); err != nil {
			return err
		}
	}
	return nil
}

// checkChain reports how one installed chain differs from cs.
func checkChain(c *nftables.Conn, t *nftables.Table, cs chainRules) error {
	want := cs.chain
	ch, err := c.ListChain(t, want.Name)
	if err != nil {
		return fmt.Errorf("firewall: chain %s of table inet %s is missing: %w", want.Name, FirewallTable, err)
	}
	if ch.Type != want.Type || ch.Hooknum == nil || *ch.Hooknum != *want.Hooknum ||
		ch.Priority == nil || *ch.Priority != *want.Priority || ch.Policy == nil || *ch.Policy != *want.Policy {
		return fmt.Errorf("firewall: chain %s of table inet %s was changed", want.Name, FirewallTable)
	}
	got, err := c.GetRules(t, ch)
	if err != nil {
		return fmt.Errorf("firewall: list rules: %w", err)
	}
	if len(got) != len(cs.rules) {
		return fmt.Errorf("firewall: chain %s of table inet %s holds %d rules, want %d", want.Name, FirewallTable, len(got), len(cs.rules))
	}
	for i, rule := range cs.rules {
		if !bytes.Equal(got[i].UserData, rule.userData()) {
			return fmt.Errorf("firewall: rule %d of chain %s of table inet %s is not %q", i+1, want.Name, FirewallTable, rule.comment)
		}
		var counters int
		for _, e := range got[i].Exprs {
			if _, ok := e.(*expr.Counter); ok {
				counters++
			}
		}
		if len(got[i].Exprs) != len(rule.exprs) || counters != 1 {
			return fmt.Errorf("firewall: rule %d of chain %s of table inet %s (%q) was changed", i+1, want.Name, FirewallTable, rule.comment)
		}
	}
	return nil
}

// Dropped returns how many packets the installed rules have dropped, by
// rule comment: evidence, for the exposure audit, that someone tried.
func (f *Firewall) Dropped() (map[string]uint64, error) {
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	t, err := c.ListTableOfFamily(FirewallTable, nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("firewall: table inet %s is missing: %w", FirewallTable, err)
	}
	out := map[string]uint64{}
	for _, name := range []string{firewallChain, forwardChain} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			return nil, fmt.Errorf("firewall: list rules of chain %s: %w", name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out[comment] += ctr.Packets
				}
			}
		}
	}
	return out, nil
}

// Remove deletes the mcpmesh table. Removing a table that is not there is
// not an error, so a node can always clean up on exit.
func (f *Firewall) Remove() error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	if _, err := c.ListTableOfFamily(FirewallTable, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("firewall: look up table inet %s: %w", FirewallTable, err)
	}
	c.DelTable(table())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("firewall: delete table inet %s: %w", FirewallTable, err)
	}
	return nil
}

// nftRule is one rule and the comment that names it in `nft list ruleset`
// and identifies it to Check.
type nftRule struct {
	comment string
	exprs   []expr.Any
}

func (r nftRule) userData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, r.comment)
}

// buildRules turns r (normalized) into nftables rules; each ends in a
// counter and a drop.
func buildRules(r FirewallRules) []nftRule {
	var out []nftRule
	for _, a := range r.MeshAddrs {
		proto, off := ipv4Header(a.Is4(), true)
		out = append(out, nftRule{
			comment: fmt.Sprintf("mcpmesh: to mesh address %s only via %s", a, r.MeshInterface),
			exprs: concat(
				notFrom("lo", r.MeshInterface),
				family(proto),
				payloadEquals(expr.PayloadBaseNetworkHeader, off, a.AsSlice()),
				dropCounted(),
			),
		})
	}
	for _, p := range r.MeshPrefixes {
		proto, off := ipv4Header(p.Addr().Is4(), false)
		out = append(out, nftRule{
			comment: fmt.Sprintf("mcpmesh: from mesh prefix %s only via %s", p, r.MeshInterface),
			exprs: concat(
				notFrom("lo", r.MeshInterface),
				family(proto),
				payloadInPrefix(off, p),
				dropCounted(),
			),
		})
	}
	for _, port := range r.LockdownPorts {
		out = append(out, nftRule{
			comment: fmt.Sprintf("mcpmesh: lockdown tcp port %d to loopback", port),
			exprs: concat(
				notFrom("lo"),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				},
				payloadEquals(expr.PayloadBaseTransportHeader, 2, binary.BigEndian.AppendUint16(nil, port)),
				dropCounted(),
			),
		})
	}
	return out
}

// buildForwardRules keeps the host from routing anything into or out of
// the mesh interface. In TUN mode the host's own programs reach the mesh
// as the node, as any program does through an interface; but containers
// and VMs behind the host would too, their traffic masqueraded to the
// node's mesh address on its way out (Docker does this for every
// interface), and a serving node would take them for this node.
func buildForwardRules(r FirewallRules) []nftRule {
	if r.MeshInterface == "" {
		return nil
	}
	drop := func(comment string, key expr.MetaKey) nftRule {
		return nftRule{
			comment: fmt.Sprintf(comment, r.MeshInterface),
			exprs: concat(
				[]expr.Any{
					&expr.Meta{Key: key, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.MeshInterface)},
				},
				dropCounted(),
			),
		}
	}
	return []nftRule{
		drop("mcpmesh: nothing routed into %s", expr.MetaKeyOIFNAME),
		drop("mcpmesh: nothing routed out of %s", expr.MetaKeyIIFNAME),
	}
}

// ipv4Header returns the netfilter protocol of the family and the offset of
// the destination (dst) or source address in its header.
func ipv4Header(is4, dst bool) (proto byte, offset uint32) {
	switch {
	case is4 && dst:
		return unix.NFPROTO_IPV4, 16
	case is4:
		return unix.NFPROTO_IPV4, 12
	case dst:
		return unix.NFPROTO_IPV6, 24
	default:
		return unix.NFPROTO_IPV6, 8
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// notFrom matches packets whose input interface is none of names.
func notFrom(names ...string) []expr.Any {
	out := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}}
	for _, n := range names {
		out = append(out, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(n)})
	}
	return out
}

func family(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func payloadEquals(base expr.PayloadBase, offset uint32, value []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(value))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: value},
	}
}

func payloadInPrefix(offset uint32, p netip.Prefix) []expr.Any {
	addr := p.Masked().Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

func dropCounted() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes,
// NUL-padded, so "eth0" does not also match "eth01".
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
