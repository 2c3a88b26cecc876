package wgconfig

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Set makes the device's peer set equal to peers and reports whether
// anything changed. Only the difference goes to the device, in one IpcSet:
// peers that are gone are removed, new ones added, and changed ones updated
// in place (update_only, replace_allowed_ips), so a peer whose key, allowed
// IPs, endpoint and keepalive are unchanged keeps its session. When nothing
// changed, the device is not touched at all.
//
// A zero key, a key listed twice, an invalid prefix or a prefix claimed by
// two peers is an error, and the previous state stays in force. A peer whose
// Endpoint becomes the zero value keeps the endpoint the device last knew:
// WireGuard has no way to forget one, and a roaming peer updates it anyway.
func (ps *Peers) Set(peers []tunnel.Peer) (changed bool, err error) {
	desired, err := normalizePeers(peers)
	if err != nil {
		return false, err
	}

	ps.state.Lock()
	defer ps.state.Unlock()
	if ps.state.closed {
		return false, errClosed("set peers")
	}
	return ps.applyPeersLocked(desired)
}

// applyPeersLocked computes the UAPI difference between the applied and the
// desired peer set, sends it, and on success records desired as applied.
func (ps *Peers) applyPeersLocked(desired map[tunnel.Key]tunnel.Peer) (bool, error) {
	current := ps.state.peers
	full := false
	if ps.state.dirty {
		// A previous IpcSet failed part way: trust the device, not our
		// record, for which peers exist, and rewrite every desired peer.
		onDevice, err := ps.devicePeerKeys()
		if err != nil {
			return false, err
		}
		current = onDevice
		full = true
	}

	var removed, updated, added []tunnel.Key
	for k := range current {
		if _, ok := desired[k]; !ok {
			removed = append(removed, k)
		}
	}
	for k, p := range desired {
		old, ok := current[k]
		switch {
		case !ok:
			added = append(added, k)
		case full || !samePeer(old, p):
			updated = append(updated, k)
		}
	}
	if len(removed)+len(updated)+len(added) == 0 {
		return false, nil
	}
	for _, ks := range [][]tunnel.Key{removed, updated, added} {
		slices.SortFunc(ks, compareKey)
	}

	var b strings.Builder
	for _, k := range removed {
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.Hex())
	}
	for _, k := range updated {
		writePeer(&b, desired[k], !full)
	}
	var deferred []tunnel.Peer
	for _, k := range added {
		p := desired[k]
		if p.PersistentKeepalive > 0 && ps.defersFirstHandshake(k) {
			deferred = append(deferred, p)
			p.PersistentKeepalive = 0 // enabled later: see initiator.go
		}
		writePeer(&b, p, false)
	}
	if err := ps.dev.IpcSet(b.String()); err != nil {
		ps.state.dirty = true
		return false, fmt.Errorf("wgconfig: apply peers (%d removed, %d changed, %d added): %w",
			len(removed), len(updated), len(added), err)
	}
	ps.state.dirty = false
	for _, k := range removed {
		ps.cancelKeepaliveLocked(k)
	}
	for _, k := range updated {
		ps.cancelKeepaliveLocked(k) // writePeer set the keepalive as desired
	}
	for _, p := range deferred {
		ps.scheduleKeepaliveLocked(p)
	}
	ps.state.peers = desired
	ps.whois.Store(newPrefixTable(desired))
	ps.log.Debug("wgconfig: peers applied", "removed", len(removed), "changed", len(updated), "added", len(added))
	return true, nil
}

// writePeer writes the UAPI lines that make the device's view of p exactly
// p. updateOnly keeps the device from creating a peer that should already
// exist.
func writePeer(b *strings.Builder, p tunnel.Peer, updateOnly bool) {
	fmt.Fprintf(b, "public_key=%s\n", p.PublicKey.Hex())
	if updateOnly {
		b.WriteString("update_only=true\n")
	}
	b.WriteString("replace_allowed_ips=true\n")
	for _, pfx := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", pfx)
	}
	if p.Endpoint.IsValid() {
		fmt.Fprintf(b, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", keepaliveSeconds(p.PersistentKeepalive))
}

// keepaliveSeconds rounds up, so a sub-second interval still enables
// keepalives. normalizePeers has checked the range.
func keepaliveSeconds(d time.Duration) uint64 {
	return uint64((d + time.Second - 1) / time.Second)
}

// samePeer reports whether two normalized peers configure the device
// identically.
func samePeer(a, b tunnel.Peer) bool {
	return a.PublicKey == b.PublicKey &&
		a.Endpoint == b.Endpoint &&
		keepaliveSeconds(a.PersistentKeepalive) == keepaliveSeconds(b.PersistentKeepalive) &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

// normalizePeers validates peers and returns a private copy keyed by public
// key, with allowed IPs masked, deduplicated and sorted so that two
// descriptions of the same peer compare equal.
func normalizePeers(peers []tunnel.Peer) (map[tunnel.Key]tunnel.Peer, error) {
	out := make(map[tunnel.Key]tunnel.Peer, len(peers))
	owner := map[netip.Prefix]tunnel.Key{}
	for i, p := range peers {
		if p.PublicKey.IsZero() {
			return nil, fmt.Errorf("wgconfig: peer %d has a zero public key", i)
		}
		if _, dup := out[p.PublicKey]; dup {
			return nil, fmt.Errorf("wgconfig: peer %s listed twice", p.PublicKey)
		}
		if p.PersistentKeepalive < 0 || keepaliveSeconds(p.PersistentKeepalive) > math.MaxUint16 {
			return nil, fmt.Errorf("wgconfig: peer %s: persistent keepalive %v out of range [0, %ds]",
				p.PublicKey, p.PersistentKeepalive, math.MaxUint16)
		}
		if p.Endpoint.IsValid() && (p.Endpoint.Addr().IsUnspecified() || p.Endpoint.Port() == 0) {
			return nil, fmt.Errorf("wgconfig: peer %s: endpoint %s is not a reachable address", p.PublicKey, p.Endpoint)
		}
		ips := make([]netip.Prefix, 0, len(p.AllowedIPs))
		for _, pfx := range p.AllowedIPs {
			if !pfx.IsValid() {
				return nil, fmt.Errorf("wgconfig: peer %s has an invalid allowed IP %q", p.PublicKey, pfx)
			}
			pfx = pfx.Masked()
			if prev, taken := owner[pfx]; taken {
				if prev == p.PublicKey {
					continue // listed twice by the same peer: harmless
				}
				return nil, fmt.Errorf("wgconfig: allowed IP %s claimed by peers %s and %s", pfx, prev, p.PublicKey)
			}
			owner[pfx] = p.PublicKey
			ips = append(ips, pfx)
		}
		slices.SortFunc(ips, comparePrefix)
		p.AllowedIPs = ips
		out[p.PublicKey] = p
	}
	return out, nil
}

func compareKey(a, b tunnel.Key) int { return bytes.Compare(a[:], b[:]) }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// Status reports what the device knows of each configured peer, sorted by
// key, read from the device's UAPI "get" output.
func (ps *Peers) Status() ([]tunnel.PeerStatus, error) {
	ps.state.Lock()
	closed := ps.state.closed
	ps.state.Unlock()
	if closed {
		return nil, errClosed("peers")
	}
	st, err := ps.readStatus()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(st, func(a, b tunnel.PeerStatus) int { return compareKey(a.PublicKey, b.PublicKey) })
	return st, nil
}

// devicePeerKeys lists the peers the device holds, as a peer map without
// configuration, for resynchronising after a failed IpcSet.
func (ps *Peers) devicePeerKeys() (map[tunnel.Key]tunnel.Peer, error) {
	st, err := ps.readStatus()
	if err != nil {
		return nil, err
	}
	m := make(map[tunnel.Key]tunnel.Peer, len(st))
	for _, s := range st {
		m[s.PublicKey] = tunnel.Peer{PublicKey: s.PublicKey}
	}
	return m, nil
}

// readStatus reads the device's peers through its UAPI.
func (ps *Peers) readStatus() ([]tunnel.PeerStatus, error) {
	get, err := ps.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wgconfig: read device state: %w", err)
	}
	return parsePeerStatus(get)
}

// parsePeerStatus parses the peer sections of a UAPI "get" response. Keys it
// does not use are skipped so a newer wireguard-go does not break it.
func parsePeerStatus(get string) ([]tunnel.PeerStatus, error) {
	var (
		out      []tunnel.PeerStatus
		cur      *tunnel.PeerStatus
		sec, nse int64
	)
	flush := func() {
		if cur == nil {
			return
		}
		if sec != 0 || nse != 0 {
			cur.LastHandshake = time.Unix(sec, nse)
		}
		out = append(out, *cur)
	}
	err := uapiLines(get, func(key, val string) error {
		if key == "public_key" {
			flush()
			k, err := parseHexKey(val)
			if err != nil {
				return fmt.Errorf("wgconfig: device reports bad public_key %q", val)
			}
			cur, sec, nse = &tunnel.PeerStatus{PublicKey: k}, 0, 0
			return nil
		}
		if cur == nil {
			return nil // device-level line
		}
		var err error
		switch key {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(val)
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(val, 10, 64)
		case "last_handshake_time_nsec":
			nse, err = strconv.ParseInt(val, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseUint(val, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseUint(val, 10, 64)
		}
		if err != nil {
			return fmt.Errorf("wgconfig: device reports %s=%q for peer %s: %w", key, val, cur.PublicKey, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	flush()
	return out, nil
}
