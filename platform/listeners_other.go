//go:build !linux

package platform

import "net/netip"

// TODO: macOS can list listeners with sysctl net.inet.tcp.pcblist_n and
// map them to processes with proc_pidinfo; until then the exposure audit
// is Linux-only.

// ListListeners is not implemented on this system: it fails with an error
// wrapping errors.ErrUnsupported, so ScanExposure does too and the caller
// can report the audit as unavailable rather than clean.
func ListListeners() ([]Listener, error) { return nil, unsupported("list listening sockets") }

// LocalListenerOwner is not implemented on this system: it fails with an
// error wrapping errors.ErrUnsupported, so that a pinned upstream is
// refused at serve time rather than every connection failing after.
func LocalListenerOwner(netip.AddrPort) (uid int, found bool, err error) {
	return 0, false, unsupported("find a listener's owner")
}
