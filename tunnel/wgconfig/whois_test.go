package wgconfig

import (
	"net/netip"
	"testing"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

func TestWhoIsPicksLongestPrefix(t *testing.T) {
	k1, k2, k3 := tunnel.Key{1}, tunnel.Key{2}, tunnel.Key{3}
	peers, err := normalizePeers([]tunnel.Peer{
		{PublicKey: k1, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		{PublicKey: k2, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
		{PublicKey: k3, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("fd00::1/128")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tab := newPrefixTable(peers)
	for addr, want := range map[string]tunnel.Key{
		"10.9.9.9":  k1,
		"10.1.9.9":  k2,
		"10.1.2.3":  k3,
		"fd00::2":   k1,
		"fd00::1":   k3,
		"11.0.0.1":  {},
		"fe80::1":   {},
		"10.1.2.4":  k2,
		"0.0.0.0":   {},
		"fd00::":    k1,
		"fc00::abc": {},
	} {
		got, ok := tab.lookup(netip.MustParseAddr(addr))
		if ok != !want.IsZero() || got != want {
			t.Errorf("lookup(%s) = %v, %v; want %v", addr, got, ok, want)
		}
	}
}
