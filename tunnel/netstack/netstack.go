// Package netstack is the userspace mode of the mesh data plane: a
// wireguard-go device whose TUN side is a gVisor TCP/IP stack living inside
// the process, so a node needs no root, no TUN device and no routes. Mesh
// traffic exists only inside the process: ListenTCP and DialContext are the
// only ways in and out, and nothing else on the host can reach them.
//
// The package owns the device, its UDP bind, the netstack and the link
// between them (link.go, built for throughput: batches, TCP segmentation
// and receive coalescing); turning the whole desired peer set of
// tunnel.Tunnel.SetPeers into the smallest UAPI change, and WhoIs, are
// shared with kernel mode in package wgconfig. It knows nothing of MCP, of
// the coordinator or of node identities: it maps source addresses to
// WireGuard keys, and the caller maps keys to nodes.
package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/wgconfig"
)

var _ tunnel.Tunnel = (*Tunnel)(nil)

// Tunnel is a running userspace WireGuard interface. It is safe for
// concurrent use; Close releases the device, its UDP sockets, the netstack
// and every listener it handed out.
type Tunnel struct {
	// Immutable after New.
	addrs      []netip.Addr
	listenPort uint16
	dev        *device.Device
	stack      *stack.Stack
	log        *slog.Logger
	keepalive  Keepalive
	// peers owns the device's peer configuration and the WhoIs table.
	peers *wgconfig.Peers

	state struct {
		sync.Mutex
		closed    bool
		listeners map[*listener]struct{}
	}
}

// Option configures New. Options are values with an unexported method so
// that only this package can define them and the set can grow without
// breaking callers.
type Option interface {
	apply(*options)
}

type options struct {
	log       *slog.Logger
	bind      conn.Bind
	keepalive *Keepalive
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sends wireguard-go's log lines to l at debug level. Without it
// the device logs nothing: its messages (handshake retries, unreachable
// endpoints) are routine on a mesh and only useful when debugging.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithBind replaces the UDP transport (conn.NewDefaultBind) so tests can run
// tunnels over an in-memory network or a bind that drops packets.
func WithBind(b conn.Bind) Option {
	return optionFunc(func(o *options) { o.bind = b })
}

// WithKeepalive replaces DefaultKeepalive for the tunnel's connections
// (tests use fractions of a second); an Idle of zero turns keep-alive off,
// and a positive one needs a positive Interval and Count, or New refuses
// it.
func WithKeepalive(ka Keepalive) Option {
	return optionFunc(func(o *options) { o.keepalive = &ka })
}

// New brings a tunnel up: it creates the netstack NIC with cfg.Addresses,
// binds cfg.ListenPort (a free port when 0) and sets the private key. The
// tunnel starts with no peers; call SetPeers.
func New(cfg tunnel.Config, opts ...Option) (*Tunnel, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.bind == nil {
		o.bind = conn.NewDefaultBind()
	}
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("netstack: private key is not set")
	}
	if ka := o.keepalive; ka != nil && ka.Idle > 0 && (ka.Interval <= 0 || ka.Count <= 0) {
		// gVisor would give up on every connection after Idle, peer alive
		// or not.
		return nil, fmt.Errorf("netstack: keep-alive idle %s needs a positive interval and count (got %s, %d)", ka.Idle, ka.Interval, ka.Count)
	}
	addrs, err := checkAddresses(cfg.Addresses)
	if err != nil {
		return nil, err
	}
	pub, err := wgconfig.PublicKey(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = tunnel.DefaultMTU
	}
	if mtu < 1280 || mtu > 65535 {
		// 1280 is the IPv6 minimum; gVisor refuses IPv6 below it.
		return nil, fmt.Errorf("netstack: MTU %d out of range [1280, 65535]", mtu)
	}

	l := newLink(mtu)
	s, err := newStack(l, addrs)
	if err != nil {
		return nil, err
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tunnel{
		addrs:     addrs,
		stack:     s,
		log:       log,
		keepalive: DefaultKeepalive(),
	}
	if o.keepalive != nil {
		t.keepalive = *o.keepalive
	}
	// NewDevice owns the link from here on: dev.Close closes it, and
	// closeDevice the stack after it.
	t.dev = device.NewDevice(linkDevice{l}, o.bind, wgconfig.NewLogger(o.log))
	t.state.listeners = map[*listener]struct{}{}
	port, err := wgconfig.Up(t.dev, cfg.PrivateKey, cfg.ListenPort)
	if err != nil {
		t.closeDevice()
		return nil, fmt.Errorf("netstack: %w", err)
	}
	t.listenPort = port
	t.peers = wgconfig.NewPeers(t.dev, pub, log)
	return t, nil
}

// checkAddresses refuses what the netstack cannot hold as a host address and
// returns a private copy.
func checkAddresses(in []netip.Addr) ([]netip.Addr, error) {
	if len(in) == 0 {
		return nil, errors.New("netstack: no mesh address configured")
	}
	seen := make(map[netip.Addr]bool, len(in))
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		switch {
		case !a.IsValid():
			return nil, errors.New("netstack: invalid mesh address")
		case a.Is4In6() || a.Zone() != "" || a.IsUnspecified():
			return nil, fmt.Errorf("netstack: mesh address %s must be a plain IPv4 or IPv6 host address", a)
		case seen[a]:
			return nil, fmt.Errorf("netstack: mesh address %s listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// Addresses returns the mesh addresses the netstack NIC holds.
func (t *Tunnel) Addresses() []netip.Addr {
	return append([]netip.Addr(nil), t.addrs...)
}

// ListenPort returns the UDP port WireGuard is bound to, as the bind chose it
// when the configured port was 0, so the node can publish its endpoint.
func (t *Tunnel) ListenPort() uint16 { return t.listenPort }

// Close closes every listener, then the device, which closes its UDP
// sockets and the link, then the netstack and so every connection made
// through it. It is idempotent; later calls return nil.
func (t *Tunnel) Close() error {
	t.state.Lock()
	if t.state.closed {
		t.state.Unlock()
		return nil
	}
	t.state.closed = true
	ls := t.state.listeners
	t.state.listeners = nil
	t.state.Unlock()

	t.peers.Close()
	for l := range ls {
		l.close()
	}
	t.closeDevice()
	return nil
}

// closeDevice closes the device, which closes its UDP sockets and the link,
// then the stack and so every connection made through it.
func (t *Tunnel) closeDevice() {
	t.dev.Close()
	t.stack.RemoveNIC(nicID)
	t.stack.Close()
}

// errClosed is returned by operations on a closed tunnel.
func errClosed(op string) error {
	return fmt.Errorf("netstack: %s: %w", op, net.ErrClosed)
}
