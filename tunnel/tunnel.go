// Package tunnel defines the WireGuard data plane that a node runs: one
// interface, Tunnel, with a userspace implementation (tunnel/netstack) and,
// later, a kernel-TUN one (tunnel/kernel).
//
// The package knows nothing of MCP, of the coordinator or of SPIFFE: it is
// given a private key, mesh addresses and a whole desired peer set, and it
// offers listen/dial on the mesh addresses and a way to ask which peer owns
// a source address. Mapping a peer key to a node identity is the node's job.
package tunnel

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// KeyLen is the length of a Curve25519 WireGuard key.
const KeyLen = 32

// Key is a WireGuard Curve25519 key (private or public). It is a value type so
// peers can be compared and used as map keys.
type Key [KeyLen]byte

// String returns the standard base64 form used by wg(8) and in netmaps.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the lowercase hex form that the wireguard-go UAPI expects.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether k is all zeros (an unset key).
func (k Key) IsZero() bool { return k == Key{} }

// ParseKey parses the base64 form produced by String.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("tunnel: key is not base64: %w", err)
	}
	if len(b) != KeyLen {
		return k, fmt.Errorf("tunnel: key has %d bytes, want %d", len(b), KeyLen)
	}
	copy(k[:], b)
	return k, nil
}

// MarshalText implements encoding.TextMarshaler so keys travel as base64 in JSON.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// Config is what a tunnel needs to come up. Peers are set afterwards with
// SetPeers so that the first netmap and every later one take the same path.
type Config struct {
	// PrivateKey is this node's WireGuard private key.
	PrivateKey Key
	// Addresses are this node's mesh addresses (an IPv4 in 100.64.0.0/10 and
	// an IPv6 in the trust domain's ULA /48).
	Addresses []netip.Addr
	// ListenPort is the UDP port WireGuard binds; 0 picks a free one.
	ListenPort uint16
	// MTU of the tunnel interface; 0 means DefaultMTU.
	MTU int
}

// MeshPrefix4 is the IPv4 range every mesh address is drawn from; the
// coordinator's allocator uses the same one.
var MeshPrefix4 = netip.MustParsePrefix("100.64.0.0/10")

// MeshPrefixes derives the mesh's address ranges from a node's own mesh
// addresses: MeshPrefix4 for an IPv4 address in it (a /32 otherwise), and
// the /48 of an IPv6 address, which is the trust domain's ULA prefix. TUN
// mode routes them to the interface; the host firewall guards them.
func MeshPrefixes(addrs []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		var p netip.Prefix
		switch {
		case a.Is4() && MeshPrefix4.Contains(a):
			p = MeshPrefix4
		case a.Is4():
			p = netip.PrefixFrom(a, 32)
		default:
			p, _ = a.Prefix(48)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// DefaultMTU leaves room for WireGuard's 80 bytes of overhead on a 1500-byte
// path over IPv6.
const DefaultMTU = 1420

// Peer is one WireGuard peer in the desired state.
type Peer struct {
	PublicKey  Key
	AllowedIPs []netip.Prefix
	// Endpoint is where the peer's WireGuard listens; the zero value means
	// unknown (the peer can still reach us and we learn its endpoint).
	Endpoint netip.AddrPort
	// PersistentKeepalive keeps NAT mappings open; 0 disables it.
	PersistentKeepalive time.Duration
}

// PeerStatus is what the data plane knows of a configured peer.
type PeerStatus struct {
	PublicKey     Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero if there has been none
	RxBytes       uint64
	TxBytes       uint64
}

// ErrNoPeer is returned by WhoIs when no configured peer owns an address.
var ErrNoPeer = errors.New("tunnel: no peer owns that address")

// Tunnel is a running WireGuard interface on the mesh.
//
// Implementations must be safe for concurrent use. After Close, Listen and
// Dial fail with net.ErrClosed and open listeners and connections are closed.
type Tunnel interface {
	// SetPeers replaces the whole peer set with peers, touching only what
	// changed: a peer whose key, allowed IPs and endpoint are unchanged keeps
	// its session (no new handshake). It reports whether anything changed.
	SetPeers(peers []Peer) (changed bool, err error)
	// Peers reports the status of every configured peer.
	Peers() ([]PeerStatus, error)
	// WhoIs returns the public key of the peer whose allowed IPs contain
	// addr, or ErrNoPeer.
	WhoIs(addr netip.Addr) (Key, error)
	// ListenTCP listens on port of this node's mesh address (both families
	// where configured). Nothing outside the tunnel can reach it.
	ListenTCP(port uint16) (net.Listener, error)
	// DialContext dials a TCP address (mesh address and port) through the tunnel.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Ping sends one ICMP echo to a mesh address and returns the round trip.
	Ping(ctx context.Context, addr netip.Addr) (time.Duration, error)
	// Addresses are the mesh addresses of this node.
	Addresses() []netip.Addr
	// ListenPort is the UDP port WireGuard is bound to.
	ListenPort() uint16
	// Close tears the tunnel down.
	Close() error
}
