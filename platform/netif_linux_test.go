package platform

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/test/netnstest"
)

// TestAddRoutesNamesWhoAlreadyOwnsTheMeshPrefix: on a host where another
// VPN (or a CGNAT network) already routes 100.64.0.0/10, bringing the mesh
// interface up fails with an error that says so and names the interface,
// instead of "file exists".
func TestAddRoutesNamesWhoAlreadyOwnsTheMeshPrefix(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "rt", "host")
	// veth pairs stand in for the interfaces (this kernel has no dummy).
	for _, l := range []string{"othervpn", "mcpmesh"} {
		ns.IP("link", "add", l+"0", "type", "veth", "peer", "name", l+"1")
		ns.IP("link", "set", l+"0", "up")
		ns.IP("link", "set", l+"1", "up")
	}
	ns.IP("route", "add", "100.64.0.0/10", "dev", "othervpn0")
	var err error
	ns.Do(func() { err = AddRoutes("mcpmesh0", []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}) })
	if err == nil || !strings.Contains(err.Error(), "already routed via othervpn0") {
		t.Fatalf("AddRoutes over another interface's route = %v, want an error naming othervpn0", err)
	}
	ns.Do(func() { err = AddRoutes("mcpmesh0", []netip.Prefix{netip.MustParsePrefix("fd7a:115c:a1e0::/48")}) })
	if err != nil {
		t.Fatalf("AddRoutes of a free prefix: %v", err)
	}
}

// TestAddWireGuardLinkSaysWhenTheKernelHasNoWireGuard: on a kernel without
// the module (this machine) the error is ErrNoKernelWireGuard, which makes
// TUN mode fall back to wireguard-go; with the module the interface is
// created. Anything else is a real failure.
func TestAddWireGuardLinkSaysWhenTheKernelHasNoWireGuard(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "wg", "host")
	var err error
	ns.Do(func() { err = AddWireGuardLink("wgtest0") })
	switch {
	case err == nil:
		t.Log("this kernel has WireGuard: the interface was created")
		if out := ns.IP("link", "show", "wgtest0"); !strings.Contains(out, "wgtest0") {
			t.Errorf("ip link show wgtest0: %s", out)
		}
	case errors.Is(err, ErrNoKernelWireGuard):
		t.Logf("no WireGuard in this kernel: %v", err)
	default:
		t.Fatalf("AddWireGuardLink = %v, want success or ErrNoKernelWireGuard", err)
	}
}
