package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ListenTCP listens on port of every mesh address of this node and returns
// one listener that accepts from all of them. The sockets are bound to the
// mesh addresses only, never to a wildcard, so the port is not open on the
// host's other addresses. (Linux still accepts a packet for a mesh address
// that arrives on another interface; closing that is the host firewall's
// job.) Port 0 picks a free port, the same one on every address.
func (t *Tunnel) ListenTCP(port uint16) (net.Listener, error) {
	t.state.Lock()
	defer t.state.Unlock()
	if t.state.closed {
		return nil, errClosed(fmt.Sprintf("listen tcp port %d", port))
	}
	l := &listener{
		t:     t,
		conns: make(chan *trackedConn),
		done:  make(chan struct{}),
	}
	for _, a := range t.addrs {
		ap := netip.AddrPortFrom(a, port)
		nl, err := net.ListenTCP(tcpNetwork(a), net.TCPAddrFromAddrPort(ap))
		if err != nil {
			l.closeListeners()
			return nil, fmt.Errorf("kernel: listen tcp %s: %w", ap, err)
		}
		l.ls = append(l.ls, nl)
		if port == 0 {
			port = uint16(nl.Addr().(*net.TCPAddr).Port)
		}
	}
	for _, nl := range l.ls {
		l.wg.Add(1)
		go l.acceptLoop(nl)
	}
	t.state.listeners[l] = struct{}{}
	return l, nil
}

// DialContext dials a TCP address ("ip:port", a mesh address) from this
// node's mesh address of the same family, so the peer sees (and WhoIs
// finds) the mesh address rather than whatever the routing table would
// pick. network is "tcp", "tcp4" or "tcp6". No name resolution happens.
func (t *Tunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.isClosed() {
		return nil, errClosed("dial " + addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("kernel: dial %s: want mesh ip:port: %w", addr, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	switch {
	case network == "tcp":
	case network == "tcp4" && ap.Addr().Is4(), network == "tcp6" && ap.Addr().Is6():
	case network == "tcp4" || network == "tcp6":
		return nil, fmt.Errorf("kernel: dial %s %s: address family does not match network", network, addr)
	default:
		return nil, fmt.Errorf("kernel: dial %s %s: %w", network, addr, net.UnknownNetworkError(network))
	}
	src, ok := t.sourceFor(ap.Addr())
	if !ok {
		return nil, fmt.Errorf("kernel: dial %s: this node has no mesh address of that family", addr)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	c, err := d.DialContext(ctx, tcpNetwork(src), ap.String())
	if err != nil {
		return nil, fmt.Errorf("kernel: dial %s %s: %w", network, addr, err)
	}
	tc, err := t.track(c.(*net.TCPConn))
	if err != nil {
		return nil, fmt.Errorf("kernel: dial %s %s: %w", network, addr, err)
	}
	return tc, nil
}

// sourceFor picks this node's mesh address of dst's family.
func (t *Tunnel) sourceFor(dst netip.Addr) (netip.Addr, bool) {
	for _, a := range t.addrs {
		if a.Is4() == dst.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func tcpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "tcp4"
	}
	return "tcp6"
}

// trackedConn is a kernel TCP connection the tunnel closes when it closes,
// as tunnel.Tunnel promises. Kernel sockets outlive the interface they came
// through, so without this a connection would hang on after Close.
type trackedConn struct {
	*net.TCPConn
	t *Tunnel
}

// track registers c, or closes it and fails if the tunnel closed meanwhile.
func (t *Tunnel) track(c *net.TCPConn) (*trackedConn, error) {
	tc := &trackedConn{TCPConn: c, t: t}
	t.state.Lock()
	defer t.state.Unlock()
	if t.state.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	t.state.conns[tc] = struct{}{}
	return tc, nil
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	c.t.state.Lock()
	delete(c.t.state.conns, c)
	c.t.state.Unlock()
	return c.TCPConn.Close()
}

// listener merges the per-address kernel listeners of one port. One
// goroutine per address accepts and hands connections over; close stops
// and waits for them.
type listener struct {
	t     *Tunnel
	ls    []*net.TCPListener
	conns chan *trackedConn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func (l *listener) acceptLoop(nl *net.TCPListener) {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := nl.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of file descriptors, say): wait,
			// as net/http does, rather than spin until it passes.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.t.log.Debug("kernel: accept failed", "addr", nl.Addr(), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		tc, err := l.t.track(c)
		if err != nil {
			return // tunnel closed
		}
		select {
		case l.conns <- tc:
		case <-l.done:
			tc.Close()
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

// Close stops accepting; connections already accepted stay open until they
// or the tunnel close.
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
	for _, nl := range l.ls {
		nl.Close() // wakes a blocked Accept
	}
}

// Addr is the first mesh address (IPv4 when configured first) and the port.
func (l *listener) Addr() net.Addr {
	return l.ls[0].Addr()
}
