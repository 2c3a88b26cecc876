package mcp

import (
	"net"
	"net/netip"
	"sync"
)

// DefaultMaxConnsPerSource bounds the connections one mesh address may
// hold open to the proxy at once (Config.MaxConnsPerSource when zero).
// Every connection costs the node a goroutine and buffers; without a bound,
// one peer, even one with no grant at all, could open them until the node
// runs out of memory or descriptors, and no other caller would be served.
const DefaultMaxConnsPerSource = 1024

// sourceLimit wraps a listener so that no source address holds more than
// max connections at once. A connection over the bound is closed as soon
// as it is accepted, before anything is read from it.
type sourceLimit struct {
	net.Listener
	max int

	mu   sync.Mutex
	open map[netip.Addr]int
}

func limitPerSource(ln net.Listener, max int) *sourceLimit {
	return &sourceLimit{Listener: ln, max: max, open: map[netip.Addr]int{}}
}

// Accept returns the next connection whose source is under its bound.
func (l *sourceLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c)
		l.mu.Lock()
		over := l.open[src] >= l.max
		if !over {
			l.open[src]++
		}
		l.mu.Unlock()
		if over {
			c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *sourceLimit) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
}

// sourceOf is the address a connection comes from (the zero Addr when it
// has none, which then shares one bound).
func sourceOf(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// countedConn gives its slot back when it is closed, once.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
