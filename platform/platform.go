// Package platform holds the host-specific operations a node needs when it
// runs with a real network interface: putting the mesh addresses and routes
// on an interface, bringing it up, and taking it away again. Each operating
// system has its own file (netif_linux.go beside netif_other.go); on systems
// without an implementation every call fails with errors.ErrUnsupported, so
// callers can fall back to userspace mode.
//
// The package knows nothing of WireGuard, of the mesh or of the node: it is
// given an interface name, addresses and prefixes.
package platform
