// Package kernel is the kernel-TUN mode of the mesh data plane: a real
// network interface (mcpmesh0 by default) that holds the mesh addresses and
// routes the mesh prefixes, with wireguard-go moving its packets. Services
// listen with ordinary kernel sockets on the mesh address, so any program on
// the host can use the mesh, and the host firewall sees mesh traffic on its
// own interface. It needs root (CAP_NET_ADMIN).
//
// The package owns the TUN device, the wireguard-go device and its UDP
// bind, and the interface's addresses and routes (through package
// platform). Peer configuration, WhoIs and handshake staggering are shared
// with userspace mode in package wgconfig. It knows nothing of MCP, of the
// coordinator or of node identities, and nothing of host firewalling.
package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/mcpmesh/mcpmesh/platform"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/wgconfig"
)

var _ tunnel.Tunnel = (*Tunnel)(nil)

// DefaultName is the interface name used unless WithName says otherwise.
const DefaultName = "mcpmesh0"

// Tunnel is a running kernel-TUN WireGuard interface. It is safe for
// concurrent use; Close removes the interface (and with it its addresses
// and routes) and closes every listener and connection it handed out.
type Tunnel struct {
	// Immutable after New.
	name       string
	addrs      []netip.Addr
	listenPort uint16
	// Exactly one of dev and kdev is set: wireguard-go on a TUN device,
	// or the kernel's WireGuard driven through wgctrl.
	dev  *device.Device
	kdev *wgconfig.WgctrlDevice
	log  *slog.Logger
	// peers owns the device's peer configuration and the WhoIs table.
	peers *wgconfig.Peers

	state struct {
		sync.Mutex
		closed    bool
		listeners map[*listener]struct{}
		conns     map[*trackedConn]struct{}
	}
}

// Option configures New. Options are values with an unexported method so
// that only this package can define them and the set can grow without
// breaking callers.
type Option interface {
	apply(*options)
}

type options struct {
	name        string
	routes      []netip.Prefix
	log         *slog.Logger
	bind        conn.Bind
	userspaceWG bool
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithName names the interface (default DefaultName). Two tunnels on one
// host, or a host that already has an mcpmesh0, need distinct names.
func WithName(name string) Option {
	return optionFunc(func(o *options) { o.name = name })
}

// WithRoutes sets the prefixes routed to the interface. Without it they are
// derived from the mesh addresses: 100.64.0.0/10 for an IPv4 address in it
// (a /32 otherwise), and the /48 of an IPv6 address, which is the trust
// domain's ULA prefix.
func WithRoutes(prefixes ...netip.Prefix) Option {
	return optionFunc(func(o *options) { o.routes = append([]netip.Prefix(nil), prefixes...) })
}

// WithLogger sends wireguard-go's log lines to l at debug level. Without it
// the device logs nothing.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithBind replaces the UDP transport (conn.NewDefaultBind). It implies
// wireguard-go, since the kernel's WireGuard has its own sockets.
func WithBind(b conn.Bind) Option {
	return optionFunc(func(o *options) { o.bind, o.userspaceWG = b, true })
}

// WithWireGuardGo runs wireguard-go on a TUN device even where the kernel
// has WireGuard (benchmarks compare the two; an operator may prefer it).
func WithWireGuardGo() Option {
	return optionFunc(func(o *options) { o.userspaceWG = true })
}

// New creates the mesh interface, puts cfg.Addresses on it as host
// addresses, routes the mesh prefixes to it and brings it up, with
// WireGuard bound to cfg.ListenPort (a free port when 0). Where the kernel
// has the WireGuard module the interface is a kernel WireGuard link driven
// through wgctrl; otherwise wireguard-go runs on a TUN device (Engine says
// which). The tunnel starts with no peers; call SetPeers. On error nothing
// is left behind.
func New(cfg tunnel.Config, opts ...Option) (*Tunnel, error) {
	o := options{name: DefaultName}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.bind == nil {
		o.bind = conn.NewDefaultBind()
	}
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("kernel: private key is not set")
	}
	addrs, err := checkAddresses(cfg.Addresses)
	if err != nil {
		return nil, err
	}
	routes := o.routes
	if routes == nil {
		routes = tunnel.MeshPrefixes(addrs)
	}
	pub, err := wgconfig.PublicKey(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = tunnel.DefaultMTU
	}
	if mtu < 1280 || mtu > 65535 {
		// 1280 is the IPv6 minimum; the kernel drops IPv6 from a link below it.
		return nil, fmt.Errorf("kernel: MTU %d out of range [1280, 65535]", mtu)
	}

	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Where the kernel has WireGuard, it is the data plane: create a
	// "wireguard" link and drive it through wgctrl. Otherwise wireguard-go
	// runs on a TUN device. Everything above the device (addresses,
	// routes, host sockets) is the same either way.
	kernelWG := false
	if !o.userspaceWG {
		switch err := platform.AddWireGuardLink(o.name); {
		case err == nil:
			kernelWG = true
		case errors.Is(err, platform.ErrNoKernelWireGuard):
			log.Debug("kernel: no WireGuard module; running wireguard-go on a TUN device", "err", err)
		default:
			return nil, fmt.Errorf("kernel: %w", err)
		}
	}
	t := &Tunnel{name: o.name, addrs: addrs, log: log}
	var dev wgconfig.Device
	if kernelWG {
		kd, err := wgconfig.OpenWgctrl(o.name)
		if err != nil {
			platform.DeleteLink(o.name)
			return nil, fmt.Errorf("kernel: %w", err)
		}
		t.kdev, dev = kd, kd
	} else {
		tdev, err := tun.CreateTUN(o.name, mtu)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, fmt.Errorf("kernel: create TUN interface %s: %w (kernel TUN mode needs root or CAP_NET_ADMIN)", o.name, err)
			}
			return nil, fmt.Errorf("kernel: create TUN interface %s: %w", o.name, err)
		}
		name, err := tdev.Name()
		if err != nil {
			tdev.Close()
			return nil, fmt.Errorf("kernel: name of TUN interface %s: %w", o.name, err)
		}
		t.name = name
		// NewDevice owns tdev from here on: dev.Close closes it, and
		// closing the TUN file removes the interface.
		t.dev = device.NewDevice(tdev, o.bind, wgconfig.NewLogger(o.log))
		dev = t.dev
	}
	name := t.name
	t.state.listeners = map[*listener]struct{}{}
	t.state.conns = map[*trackedConn]struct{}{}
	fail := func(err error) (*Tunnel, error) {
		t.closeDevice()
		platform.DeleteLink(name) // normally gone with the TUN file already
		return nil, fmt.Errorf("kernel: %w", err)
	}
	port, err := wgconfig.Up(dev, cfg.PrivateKey, cfg.ListenPort)
	if err != nil {
		return fail(err)
	}
	t.listenPort = port
	if err := platform.AddAddresses(name, addrs); err != nil {
		return fail(err)
	}
	if err := platform.SetUp(name, mtu); err != nil {
		return fail(err)
	}
	// Routes after the link is up: the kernel refuses a route through a
	// link that is down.
	if err := platform.AddRoutes(name, routes); err != nil {
		return fail(err)
	}
	t.peers = wgconfig.NewPeers(dev, pub, log)
	log.Debug("kernel: interface up", "name", name, "engine", t.Engine(), "addresses", addrs, "routes", routes, "listen_port", port)
	return t, nil
}

// checkAddresses refuses what cannot be a host address on the interface
// and returns a private copy.
func checkAddresses(in []netip.Addr) ([]netip.Addr, error) {
	if len(in) == 0 {
		return nil, errors.New("kernel: no mesh address configured")
	}
	seen := make(map[netip.Addr]bool, len(in))
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		switch {
		case !a.IsValid():
			return nil, errors.New("kernel: invalid mesh address")
		case a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast():
			return nil, fmt.Errorf("kernel: mesh address %s must be a plain unicast IPv4 or IPv6 host address", a)
		case seen[a]:
			return nil, fmt.Errorf("kernel: mesh address %s listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// Name is the interface's name as the kernel gave it.
func (t *Tunnel) Name() string { return t.name }

// Addresses returns the mesh addresses the interface holds.
func (t *Tunnel) Addresses() []netip.Addr {
	return append([]netip.Addr(nil), t.addrs...)
}

// ListenPort returns the UDP port WireGuard is bound to, as the bind chose it
// when the configured port was 0, so the node can publish its endpoint.
func (t *Tunnel) ListenPort() uint16 { return t.listenPort }

// SetPeers makes the device's peer set equal to peers and reports whether
// anything changed, touching only the difference (see wgconfig.Peers.Set):
// a peer whose key, allowed IPs, endpoint and keepalive are unchanged keeps
// its session. An invalid peer set is an error and the previous state stays
// in force. Routing is not touched: the interface routes the whole mesh
// prefix, and WireGuard's allowed IPs decide which peer gets a packet.
func (t *Tunnel) SetPeers(peers []tunnel.Peer) (changed bool, err error) {
	if t.isClosed() {
		return false, errClosed("set peers")
	}
	changed, err = t.peers.Set(peers)
	if err != nil {
		return false, fmt.Errorf("kernel: %w", err)
	}
	return changed, nil
}

// Peers reports what the device knows of each configured peer, sorted by
// key.
func (t *Tunnel) Peers() ([]tunnel.PeerStatus, error) {
	if t.isClosed() {
		return nil, errClosed("peers")
	}
	st, err := t.peers.Status()
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	return st, nil
}

// WhoIs returns the key of the peer whose allowed IPs hold addr, by longest
// prefix, as WireGuard itself routes; tunnel.ErrNoPeer when none does. The
// RemoteAddr of a connection accepted on a mesh listener is such an address.
func (t *Tunnel) WhoIs(addr netip.Addr) (tunnel.Key, error) {
	return t.peers.WhoIs(addr)
}

// Close closes every listener and connection, then the device, which
// closes its UDP sockets and the TUN file and so removes the interface with
// its addresses and routes. It is idempotent; later calls return nil.
func (t *Tunnel) Close() error {
	t.state.Lock()
	if t.state.closed {
		t.state.Unlock()
		return nil
	}
	t.state.closed = true
	ls, cs := t.state.listeners, t.state.conns
	t.state.listeners, t.state.conns = nil, nil
	t.state.Unlock()

	t.peers.Close()
	for l := range ls {
		l.close()
	}
	for c := range cs {
		c.TCPConn.Close()
	}
	t.closeDevice()
	// Closing the TUN file removes a non-persistent interface (this only
	// matters if something made it persistent meanwhile); a kernel
	// WireGuard interface goes only here.
	if err := platform.DeleteLink(t.name); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	return nil
}

// closeDevice stops the WireGuard device, whichever it is.
func (t *Tunnel) closeDevice() {
	if t.dev != nil {
		t.dev.Close()
	}
	if t.kdev != nil {
		t.kdev.Close()
	}
}

// Engine says which WireGuard implementation carries the tunnel: "kernel"
// (the wireguard module, through wgctrl) or "wireguard-go".
func (t *Tunnel) Engine() string {
	if t.kdev != nil {
		return "kernel"
	}
	return "wireguard-go"
}

func (t *Tunnel) isClosed() bool {
	t.state.Lock()
	defer t.state.Unlock()
	return t.state.closed
}

// errClosed is returned by operations on a closed tunnel.
func errClosed(op string) error {
	return fmt.Errorf("kernel: %s: %w", op, net.ErrClosed)
}
