package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

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
		gl, err := gonet.ListenTCP(t.stack, fa, proto)
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
	c, err := gonet.DialContextTCP(ctx, t.stack, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
	}
	return c, nil
}

// listener merges the per-address gVisor listeners of one port. One
// goroutine per address accepts and hands connections over; close stops
// and waits for them.
type listener struct {
	t     *Tunnel
	ls    []*gonet.TCPListener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func (l *listener) acceptLoop(gl *gonet.TCPListener) {
	defer l.wg.Done()
	for {
		c, err := gl.Accept()
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
		gl.Shutdown() // wakes a blocked Accept
		gl.Close()
	}
}

// Addr is the first mesh address (IPv4 when configured first) and the port.
func (l *listener) Addr() net.Addr {
	return l.ls[0].Addr()
}
