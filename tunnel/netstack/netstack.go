// Package netstack is the userspace mode of the mesh data plane: a
// wireguard-go device whose TUN side is a gVisor TCP/IP stack living inside
// the process, so a node needs no root, no TUN device and no routes. Mesh
// traffic exists only inside the process: ListenTCP and DialContext are the
// only ways in and out, and nothing else on the host can reach them.
//
// The package owns the device, its UDP bind and the netstack, and turns the
// whole desired peer set of tunnel.Tunnel.SetPeers into the smallest UAPI
// change. It knows nothing of MCP, of the coordinator or of node identities:
// it maps source addresses to WireGuard keys, and the caller maps keys to
// nodes.
package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

var _ tunnel.Tunnel = (*Tunnel)(nil)

// Tunnel is a running userspace WireGuard interface. It is safe for
// concurrent use; Close releases the device, its UDP sockets, the netstack
// and every listener it handed out.
type Tunnel struct {
	// Immutable after New.
	pub        tunnel.Key // this node's public key, for handshake tie-breaks
	addrs      []netip.Addr
	listenPort uint16
	dev        *device.Device
	tnet       *wgnetstack.Net
	log        *slog.Logger

	// whois is rebuilt under state's lock and read without any lock, because
	// WhoIs runs on every accepted connection.
	whois atomic.Pointer[prefixTable]

	state struct {
		sync.Mutex
		closed bool
		// peers is the desired state last applied to the device, with
		// allowed IPs masked and sorted.
		peers map[tunnel.Key]tunnel.Peer
		// dirty is set when an IpcSet failed part way, so the device may
		// differ from peers; the next SetPeers resynchronises from IpcGet.
		dirty     bool
		listeners map[*listener]struct{}
		// deferred holds the timers that will enable a new peer's
		// keepalive (see initiator.go).
		deferred map[tunnel.Key]*time.Timer
	}
}

// Option configures New. Options are values with an unexported method so
// that only this package can define them and the set can grow without
// breaking callers.
type Option interface {
	apply(*options)
}

type options struct {
	log  *slog.Logger
	bind conn.Bind
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
	addrs, err := checkAddresses(cfg.Addresses)
	if err != nil {
		return nil, err
	}
	pub, err := publicKeyOf(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = tunnel.DefaultMTU
	}
	if mtu < 1280 || mtu > 65535 {
		// 1280 is the IPv6 minimum; gVisor refuses IPv6 below it.
		return nil, fmt.Errorf("netstack: MTU %d out of range [1280, 65535]", mtu)
	}

	tdev, tnet, err := wgnetstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, fmt.Errorf("netstack: create netstack: %w", err)
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tunnel{
		pub:   pub,
		addrs: addrs,
		tnet:  tnet,
		log:   log,
	}
	// NewDevice owns tdev from here on: dev.Close closes it.
	t.dev = device.NewDevice(tdev, o.bind, deviceLogger(o.log))
	t.state.peers = map[tunnel.Key]tunnel.Peer{}
	t.state.listeners = map[*listener]struct{}{}
	t.state.deferred = map[tunnel.Key]*time.Timer{}
	t.whois.Store(newPrefixTable(nil))

	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", cfg.PrivateKey.Hex(), cfg.ListenPort)
	if err := t.dev.IpcSet(uapi); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("netstack: configure device: %w", err)
	}
	if err := t.dev.Up(); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("netstack: bring device up on UDP port %d: %w", cfg.ListenPort, err)
	}
	port, err := t.readListenPort()
	if err != nil {
		t.dev.Close()
		return nil, err
	}
	t.listenPort = port
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

// readListenPort reads back the UDP port the bind chose, which differs from
// the configured one when that was 0.
func (t *Tunnel) readListenPort() (uint16, error) {
	get, err := t.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("netstack: read device state: %w", err)
	}
	for line := range strings.Lines(get) {
		v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listen_port=")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("netstack: device reports listen_port %q: %w", v, err)
		}
		return uint16(p), nil
	}
	return 0, errors.New("netstack: device reports no listen_port")
}

// deviceLogger adapts wireguard-go's printf logger to slog. Both of its
// levels go to debug: what wireguard-go calls errors (a lost handshake, an
// unreachable endpoint) are normal events on a mesh, and the ones a caller
// must act on come back as returned errors.
func deviceLogger(l *slog.Logger) *device.Logger {
	if l == nil {
		return &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	l = l.With("component", "wireguard")
	logf := func(level string) func(string, ...any) {
		return func(format string, args ...any) {
			l.Debug(fmt.Sprintf(format, args...), "wg_level", level)
		}
	}
	return &device.Logger{Verbosef: logf("verbose"), Errorf: logf("error")}
}

// Addresses returns the mesh addresses the netstack NIC holds.
func (t *Tunnel) Addresses() []netip.Addr {
	return append([]netip.Addr(nil), t.addrs...)
}

// ListenPort returns the UDP port WireGuard is bound to, as the bind chose it
// when the configured port was 0, so the node can publish its endpoint.
func (t *Tunnel) ListenPort() uint16 { return t.listenPort }

// Close closes every listener, then the device, which closes its UDP
// sockets and the netstack and so every connection made through it. It is
// idempotent; later calls return nil.
func (t *Tunnel) Close() error {
	t.state.Lock()
	if t.state.closed {
		t.state.Unlock()
		return nil
	}
	t.state.closed = true
	for k := range t.state.deferred {
		t.cancelKeepaliveLocked(k)
	}
	ls := t.state.listeners
	t.state.listeners = nil
	t.state.Unlock()

	for l := range ls {
		l.close()
	}
	t.dev.Close()
	return nil
}

// errClosed is returned by operations on a closed tunnel.
func errClosed(op string) error {
	return fmt.Errorf("netstack: %s: %w", op, net.ErrClosed)
}
