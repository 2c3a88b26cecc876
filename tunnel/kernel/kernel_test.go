package kernel

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

func TestDefaultRoutesCoverTheMeshPrefixesOfTheAddresses(t *testing.T) {
	got := defaultRoutes([]netip.Addr{
		netip.MustParseAddr("100.64.3.7"),
		netip.MustParseAddr("fd7a:115c:a1e0:0:1::9"),
		netip.MustParseAddr("100.100.0.1"), // same /10: no second route
		netip.MustParseAddr("192.0.2.1"),   // outside the mesh range: itself only
	})
	want := []netip.Prefix{
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("fd7a:115c:a1e0::/48"),
		netip.MustParsePrefix("192.0.2.1/32"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("defaultRoutes = %v, want %v", got, want)
	}
}

func TestNewRejectsBadConfigBeforeTouchingTheHost(t *testing.T) {
	key := tunnel.Key{1}
	for name, cfg := range map[string]tunnel.Config{
		"no key":          {Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
		"no address":      {PrivateKey: key},
		"wildcard":        {PrivateKey: key, Addresses: []netip.Addr{netip.IPv4Unspecified()}},
		"loopback":        {PrivateKey: key, Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		"listed twice":    {PrivateKey: key, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.1")}},
		"MTU below 1280":  {PrivateKey: key, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, MTU: 1000},
		"4-in-6 address":  {PrivateKey: key, Addresses: []netip.Addr{netip.MustParseAddr("::ffff:100.64.0.1")}},
		"zoned IPv6 addr": {PrivateKey: key, Addresses: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}},
	} {
		if tun, err := New(cfg, WithName("mcpmesh-bad")); err == nil {
			tun.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}
