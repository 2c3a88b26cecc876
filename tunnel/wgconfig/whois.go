package wgconfig

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// WhoIs returns the key of the peer whose allowed IPs hold addr, by longest
// prefix, as WireGuard itself routes; tunnel.ErrNoPeer when none does. It
// answers from the desired state of the last successful Set, without a
// lock, because the caller asks on every accepted connection.
func (ps *Peers) WhoIs(addr netip.Addr) (tunnel.Key, error) {
	if k, ok := ps.whois.Load().lookup(addr.Unmap().WithZone("")); ok {
		return k, nil
	}
	return tunnel.Key{}, tunnel.ErrNoPeer
}

// prefixTable is an immutable longest-prefix-match table: one exact-match
// map per prefix length in use, tried longest first. Mesh peers own one /32
// and one /128 each, so a lookup is usually one mask and one map probe per
// family.
type prefixTable struct {
	v4, v6 []lengthBucket // longest first
}

type lengthBucket struct {
	bits   int
	owners map[netip.Prefix]tunnel.Key
}

// newPrefixTable indexes the allowed IPs of normalized peers (masked, and
// owned by one peer each).
func newPrefixTable(peers map[tunnel.Key]tunnel.Peer) *prefixTable {
	t := &prefixTable{}
	for k, p := range peers {
		for _, pfx := range p.AllowedIPs {
			b := &t.v6
			if pfx.Addr().Is4() {
				b = &t.v4
			}
			*b = insertPrefix(*b, pfx, k)
		}
	}
	byLongest := func(a, b lengthBucket) int { return cmp.Compare(b.bits, a.bits) }
	slices.SortFunc(t.v4, byLongest)
	slices.SortFunc(t.v6, byLongest)
	return t
}

func insertPrefix(bs []lengthBucket, pfx netip.Prefix, k tunnel.Key) []lengthBucket {
	for _, b := range bs {
		if b.bits == pfx.Bits() {
			b.owners[pfx] = k
			return bs
		}
	}
	return append(bs, lengthBucket{bits: pfx.Bits(), owners: map[netip.Prefix]tunnel.Key{pfx: k}})
}

func (t *prefixTable) lookup(addr netip.Addr) (tunnel.Key, bool) {
	bs := t.v6
	if addr.Is4() {
		bs = t.v4
	}
	for _, b := range bs {
		pfx, err := addr.Prefix(b.bits)
		if err != nil {
			continue
		}
		if k, ok := b.owners[pfx]; ok {
			return k, true
		}
	}
	return tunnel.Key{}, false
}
