package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Keepalive is the TCP keep-alive of the tunnel's connections, accepted
// and dialed: probes after Idle without traffic, every Interval, and the
// connection fails after Count unanswered. The kernel gives Go's own
// connections the same (15 s, 15 s, and Linux's 9 probes), so a mesh
// service notices a caller that vanished without a word (a laptop put to
// sleep, a node revoked or gone off the network) in about 2.5 min in
// userspace mode as in TUN mode. Without it, gVisor never probes, and a
// quiet stream of such a caller (an MCP session's event stream) would hold
// its session and its slot for good.
type Keepalive struct {
	Idle, Interval time.Duration
	Count          int
}

// DefaultKeepalive is the keep-alive of the tunnel's connections unless
// WithKeepalive says otherwise.
func DefaultKeepalive() Keepalive {
	return Keepalive{Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}
}

// ListenTCP listens on port of every mesh address of this node and returns
// one listener that accepts from all of them. Only the netstack holds these
// addresses, so only peers can connect. The RemoteAddr of an accepted
// connection is the peer's mesh address, to be given to WhoIs. Port 0 picks
// a free port, the same one on every address.
func (t *Tunnel) ListenTCP(port uint16) (net.Listener, error) {
	t.state.Lock()
	defer t.state.Unlock()
	if t.state.closed {
		return nil, errClosed(fmt.Sprintf("listen tcp port %d", port))
	}
	l := &listener{
		t:     t,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	for _, a := range t.addrs {
		fa, proto := fullAddr(netip.AddrPortFrom(a, port))
		gl, err := listenTCP(t.stack, fa, proto, t.keepalive)
		if err != nil {
			l.closeListeners()
			return nil, fmt.Errorf("netstack: listen tcp %s: %w", netip.AddrPortFrom(a, port), err)
		}
		l.ls = append(l.ls, gl)
		if port == 0 {
			port = uint16(gl.Addr().(*net.TCPAddr).Port)
		}
	}
	for _, gl := range l.ls {
		l.wg.Add(1)
		go l.acceptLoop(gl)
	}
	t.state.listeners[l] = struct{}{}
	return l, nil
}

// DialContext dials a TCP address ("ip:port", a mesh address) through the
// tunnel. network is "tcp", "tcp4" or "tcp6". No name resolution happens:
// the mesh has no DNS at this layer.
func (t *Tunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	t.state.Lock()
	closed := t.state.closed
	t.state.Unlock()
	if closed {
		return nil, errClosed("dial " + addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s: want mesh ip:port: %w", addr, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	switch {
	case network == "tcp":
	case network == "tcp4" && ap.Addr().Is4(), network == "tcp6" && ap.Addr().Is6():
	case network == "tcp4" || network == "tcp6":
		return nil, fmt.Errorf("netstack: dial %s %s: address family does not match network", network, addr)
	default:
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, net.UnknownNetworkError(network))
	}
	fa, proto := fullAddr(ap)
	c, err := dialTCP(ctx, t.stack, fa, proto, t.keepalive)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
	}
	return c, nil
}

// dialTCP connects as gonet.DialContextTCP does, with keep-alive on (see
// Keepalive), so that a caller also notices a service's node that
// vanished, rather than wait on its answer or event stream for good.
func dialTCP(ctx context.Context, s *stack.Stack, fa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, ka Keepalive) (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	if err := setKeepalive(ep, ka); err != nil {
		ep.Close()
		return nil, err
	}
	// Registered before Connect, whose completion it reports.
	entry, done := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if err := ctx.Err(); err != nil {
		ep.Close()
		return nil, err
	}
	terr = ep.Connect(fa)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-done:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, errors.New(terr.String())
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// listener merges the per-address gVisor listeners of one port. One
// goroutine per address accepts and hands connections over; close stops
// and waits for them.
type listener struct {
	t     *Tunnel
	ls    []*tcpListener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func (l *listener) acceptLoop(gl *tcpListener) {
	defer l.wg.Done()
	for {
		c, err := gl.accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			// gVisor only fails Accept for a closed or broken endpoint;
			// nothing will ever arrive on this address again.
			l.t.log.Debug("netstack: accept failed", "addr", gl.Addr(), "err", err)
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// Accept waits for the next connection on any mesh address.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close stops accepting; connections already accepted stay open until the
// tunnel closes.
func (l *listener) Close() error {
	l.t.state.Lock()
	delete(l.t.state.listeners, l)
	l.t.state.Unlock()
	l.close()
	return nil
}

// close shuts the listener down without touching the tunnel's registry.
func (l *listener) close() {
	l.once.Do(func() {
		close(l.done)
		l.closeListeners()
		l.wg.Wait()
	})
}

func (l *listener) closeListeners() {
	for _, gl := range l.ls {
		gl.close() // wakes a blocked accept
	}
}

// Addr is the first mesh address (IPv4 when configured first) and the port.
func (l *listener) Addr() net.Addr {
	return l.ls[0].Addr()
}

// tcpListener is a listening gVisor endpoint, as gonet.TCPListener but
// for the keep-alive it turns on for each connection it accepts, which
// gVisor does not pass on from a listener and gonet gives no way to set.
type tcpListener struct {
	ep        tcpip.Endpoint
	wq        waiter.Queue
	addr      net.Addr
	keepalive Keepalive
	cancel    chan struct{}
	once      sync.Once
}

// listenBacklog is the accept queue's length, Linux's usual somaxconn.
const listenBacklog = 4096

func listenTCP(s *stack.Stack, fa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, ka Keepalive) (*tcpListener, error) {
	l := &tcpListener{keepalive: ka, cancel: make(chan struct{})}
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, proto, &l.wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind: %s", terr)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("listen: %s", terr)
	}
	bound, terr := ep.GetLocalAddress()
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("local address: %s", terr)
	}
	l.ep = ep
	l.addr = &net.TCPAddr{IP: net.IP(bound.Addr.AsSlice()), Port: int(bound.Port)}
	return l, nil
}

// accept waits for the next connection, until close.
func (l *tcpListener) accept() (net.Conn, error) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		n, wq, terr := l.ep.Accept(nil)
		if _, wait := terr.(*tcpip.ErrWouldBlock); wait {
			select {
			case <-ready:
				continue
			case <-l.cancel:
				return nil, net.ErrClosed
			}
		}
		if terr != nil {
			return nil, errors.New(terr.String())
		}
		if err := setKeepalive(n, l.keepalive); err != nil {
			// That connection alone is refused; the listener goes on.
			n.Close()
			continue
		}
		return gonet.NewTCPConn(wq, n), nil
	}
}

// setKeepalive sets the probes' timing first: turning keep-alive on arms
// its timer with the idle time the endpoint has then, so no probe ever
// waits for gVisor's default of two hours.
func setKeepalive(ep tcpip.Endpoint, ka Keepalive) error {
	if ka.Idle <= 0 {
		return nil
	}
	idle, every := tcpip.KeepaliveIdleOption(ka.Idle), tcpip.KeepaliveIntervalOption(ka.Interval)
	if terr := ep.SetSockOpt(&idle); terr != nil {
		return fmt.Errorf("keep-alive idle: %s", terr)
	}
	if terr := ep.SetSockOpt(&every); terr != nil {
		return fmt.Errorf("keep-alive interval: %s", terr)
	}
	if terr := ep.SetSockOptInt(tcpip.KeepaliveCountOption, ka.Count); terr != nil {
		return fmt.Errorf("keep-alive count: %s", terr)
	}
	ep.SocketOptions().SetKeepAlive(true)
	return nil
}

// close stops accepting and releases the endpoint; connections accepted
// before stay open.
func (l *tcpListener) close() {
	l.once.Do(func() {
		close(l.cancel)
		l.ep.Close()
	})
}

// Addr is the address the listener is bound to.
func (l *tcpListener) Addr() net.Addr { return l.addr }
