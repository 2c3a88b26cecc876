package kernel

import (
	"net/netip"
	"testing"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

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
