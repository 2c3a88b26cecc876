//go:build !linux

package platform

import (
	"errors"
	"fmt"
	"net/netip"
)

// TODO(issue 6): macOS (route(4) sockets for utun) comes with the service
// units slice; until then kernel TUN mode is Linux-only.

// AddAddresses is not implemented on this system.
func AddAddresses(ifname string, addrs []netip.Addr) error { return unsupported("add addresses") }

// AddRoutes is not implemented on this system.
func AddRoutes(ifname string, prefixes []netip.Prefix) error { return unsupported("add routes") }

// SetUp is not implemented on this system.
func SetUp(ifname string, mtu int) error { return unsupported("bring interface up") }

// DeleteLink is not implemented on this system.
func DeleteLink(ifname string) error { return unsupported("delete interface") }

// ErrNoKernelWireGuard means the kernel cannot create WireGuard interfaces.
var ErrNoKernelWireGuard = errors.New("platform: the kernel has no WireGuard support")

// AddWireGuardLink fails: kernel WireGuard is driven only on Linux.
func AddWireGuardLink(ifname string) error {
	return fmt.Errorf("%w: %w", ErrNoKernelWireGuard, unsupported("create WireGuard interface"))
}

// LinkExists is not implemented on this system.
func LinkExists(ifname string) (bool, error) { return false, unsupported("find interface") }

func unsupported(op string) error {
	return fmt.Errorf("platform: %s: %w", op, errors.ErrUnsupported)
}
