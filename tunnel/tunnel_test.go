package tunnel

import (
	"net/netip"
	"slices"
	"testing"
)

func TestMeshPrefixesCoverTheAddresses(t *testing.T) {
	got := MeshPrefixes([]netip.Addr{
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
		t.Errorf("MeshPrefixes = %v, want %v", got, want)
	}
}
