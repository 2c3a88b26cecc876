package platform

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddAddresses puts each address on the interface ifname as a host address
// (/32 or /128), so that the interface claims the address and nothing more:
// the prefixes it routes come from AddRoutes. IPv6 addresses skip duplicate
// address detection, which would leave them unusable for a second or two
// on a link where no other host can hold them anyway.
func AddAddresses(ifname string, addrs []netip.Addr) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("platform: find interface %s: %w", ifname, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() {
			return fmt.Errorf("platform: add address to %s: invalid address", ifname)
		}
		na := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, a.BitLen()))}
		if a.Is6() {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, na); err != nil {
			return fmt.Errorf("platform: add address %s to %s: %w", a, ifname, err)
		}
	}
	return nil
}

// AddRoutes routes each prefix to the interface ifname. A prefix already
// routed elsewhere is an error rather than silently taken over, since
// another mesh or VPN may own it.
func AddRoutes(ifname string, prefixes []netip.Prefix) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("platform: find interface %s: %w", ifname, err)
	}
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("platform: route to %s: invalid prefix", ifname)
		}
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       prefixNet(p.Masked()),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				if owner := routeOwner(p.Masked()); owner != "" && owner != ifname {
					return fmt.Errorf("platform: %s is already routed via %s: another VPN or mesh, or a carrier-grade NAT network, uses it; remove that route or run without --tun", p.Masked(), owner)
				}
			}
			return fmt.Errorf("platform: route %s to %s: %w", p.Masked(), ifname, err)
		}
	}
	return nil
}

// routeOwner names the interface of the main table's route for exactly p,
// or "" when there is none or it cannot be read.
func routeOwner(p netip.Prefix) string {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: prefixNet(p)}, netlink.RT_FILTER_DST)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			return l.Attrs().Name
		}
	}
	return ""
}

// ErrNoKernelWireGuard means the kernel cannot create WireGuard interfaces
// (no wireguard module), so the caller runs wireguard-go instead.
var ErrNoKernelWireGuard = errors.New("platform: the kernel has no WireGuard support")

// AddWireGuardLink creates a kernel WireGuard interface named ifname. It
// returns ErrNoKernelWireGuard when the kernel lacks the module.
func AddWireGuardLink(ifname string) error {
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: ifname}})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EINVAL):
		// "Unknown device type": rtnetlink answers EOPNOTSUPP when no
		// module provides the link kind (EINVAL on some older kernels).
		return fmt.Errorf("%w: %w", ErrNoKernelWireGuard, err)
	default:
		return fmt.Errorf("platform: create WireGuard interface %s: %w", ifname, err)
	}
}

// SetUp sets the MTU of the interface ifname and brings it up.
func SetUp(ifname string, mtu int) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("platform: find interface %s: %w", ifname, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("platform: set MTU %d on %s: %w", mtu, ifname, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("platform: bring %s up: %w", ifname, err)
	}
	return nil
}

// DeleteLink removes the interface ifname, and with it its addresses and
// routes. An interface that does not exist is not an error, so teardown
// can be repeated.
func DeleteLink(ifname string) error {
	link, err := netlink.LinkByName(ifname)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("platform: find interface %s: %w", ifname, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("platform: delete interface %s: %w", ifname, err)
	}
	return nil
}

// LinkExists reports whether an interface named ifname exists.
func LinkExists(ifname string) (bool, error) {
	_, err := netlink.LinkByName(ifname)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("platform: find interface %s: %w", ifname, err)
	}
	return true, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}
