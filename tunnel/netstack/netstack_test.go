package netstack

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// connectPair makes a and b peers of each other over loopback UDP.
func connectPair(t *testing.T, a, b *node) {
	t.Helper()
	mustSetPeers(t, a, b.peer())
	mustSetPeers(t, b, a.peer())
}

func dial(t *testing.T, from *node, network string, to netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, network, to.String())
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cannotDial asserts that a dial from one tunnel to another fails within a
// short time.
func cannotDial(t *testing.T, from *node, to netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", to.String())
	if err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded, want failure", to)
	}
}

func TestTwoTunnelsExchangeTCPOverIPv4AndIPv6AndPing(t *testing.T) {
	checkGoroutineLeaks(t)
	a, b := newNode(t, 1), newNode(t, 2)
	connectPair(t, a, b)
	l, err := b.ListenTCP(8080)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveEcho(t, l)

	for _, tc := range []struct {
		network string
		to, src netip.Addr
	}{
		{"tcp4", b.v4, a.v4},
		{"tcp6", b.v6, a.v6},
		{"tcp", b.v4, a.v4},
	} {
		c := dial(t, a, tc.network, netip.AddrPortFrom(tc.to, 8080))
		roundTrip(t, c, "hello over "+tc.network)
		remote, ok := srv.lastRemote().(*net.TCPAddr)
		if !ok {
			t.Fatalf("accepted conn RemoteAddr = %v, want *net.TCPAddr", srv.lastRemote())
		}
		if got := remote.AddrPort().Addr().Unmap(); got != tc.src {
			t.Errorf("%s: accepted conn from %v, want a's mesh address %v", tc.network, got, tc.src)
		}
		// The proxy's question: who is on the other end?
		k, err := b.WhoIs(remote.AddrPort().Addr())
		if err != nil || k != a.pub {
			t.Errorf("%s: WhoIs(%v) = %v, %v; want a's key %v", tc.network, remote, k, err, a.pub)
		}
	}

	for _, to := range []netip.Addr{b.v4, b.v6} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rtt, err := a.Ping(ctx, to)
		cancel()
		if err != nil {
			t.Fatalf("Ping(%v): %v", to, err)
		}
		if rtt <= 0 || rtt > 5*time.Second {
			t.Errorf("Ping(%v) rtt = %v", to, rtt)
		}
	}

	st, err := a.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].PublicKey != b.pub {
		t.Fatalf("a.Peers() = %+v, want only b", st)
	}
	if st[0].LastHandshake.IsZero() || st[0].RxBytes == 0 || st[0].TxBytes == 0 {
		t.Errorf("a's status of b after traffic = %+v, want a handshake and bytes both ways", st[0])
	}
	if st[0].Endpoint != b.peer().Endpoint {
		t.Errorf("endpoint of b = %v, want %v", st[0].Endpoint, b.peer().Endpoint)
	}
}

func TestWhoIsForeignAddressIsErrNoPeer(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	connectPair(t, a, b)
	for _, addr := range []netip.Addr{
		netip.MustParseAddr("100.64.0.99"),
		netip.MustParseAddr("fd7a:115c::99"),
		a.v4, // our own address is not a peer's
		{},
	} {
		if k, err := a.WhoIs(addr); !errors.Is(err, tunnel.ErrNoPeer) {
			t.Errorf("WhoIs(%v) = %v, %v; want ErrNoPeer", addr, k, err)
		}
	}
	// A 4-in-6 form of b's address is still b.
	if k, err := a.WhoIs(netip.AddrFrom16(b.v4.As16())); err != nil || k != b.pub {
		t.Errorf("WhoIs(4in6 of b) = %v, %v; want b", k, err)
	}
}

func TestRemovedPeerCannotConnectWhileOthersStillCan(t *testing.T) {
	checkGoroutineLeaks(t)
	a, b, c := newNode(t, 1), newNode(t, 2), newNode(t, 3)
	mustSetPeers(t, b, a.peer(), c.peer())
	mustSetPeers(t, a, b.peer())
	mustSetPeers(t, c, b.peer())
	l, err := b.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, l)
	to := netip.AddrPortFrom(b.v4, 80)
	roundTrip(t, dial(t, a, "tcp", to), "before removal")

	changed, err := b.SetPeers([]tunnel.Peer{c.peer()})
	if err != nil || !changed {
		t.Fatalf("SetPeers(remove a) = %v, %v; want changed", changed, err)
	}
	cannotDial(t, a, to)
	if _, err := b.WhoIs(a.v4); !errors.Is(err, tunnel.ErrNoPeer) {
		t.Errorf("b.WhoIs(a) after removal: err = %v, want ErrNoPeer", err)
	}
	roundTrip(t, dial(t, c, "tcp", to), "c still welcome")
}

func TestUnchangedPeerKeepsItsSessionAcrossSetPeers(t *testing.T) {
	var uapiLines atomic.Int64
	logger := slog.New(countingHandler{n: &uapiLines})
	a := newNode(t, 1, WithLogger(logger))
	b, c := newNode(t, 2), newNode(t, 3)
	connectPair(t, a, b)

	// Each ping gets its own generous bound: under -race with other
	// packages' tests on two cores, a shared 5 s budget ran out.
	ping := func(addr netip.Addr) error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := a.Ping(ctx, addr)
		return err
	}
	if err := ping(b.v4); err != nil {
		t.Fatalf("ping b: %v", err)
	}
	before := handshakeWith(t, a, b.pub)
	if before.IsZero() {
		t.Fatal("no handshake with b after a ping")
	}

	// Same peers, described differently (order, unmasked prefix): nothing to do.
	same := b.peer()
	same.AllowedIPs = []netip.Prefix{same.AllowedIPs[1], same.AllowedIPs[0], same.AllowedIPs[0]}
	uapiLines.Store(0)
	if changed, err := a.SetPeers([]tunnel.Peer{same}); err != nil || changed {
		t.Fatalf("SetPeers(same) = %v, %v; want unchanged", changed, err)
	}
	if n := uapiLines.Load(); n != 0 {
		t.Errorf("SetPeers(same) talked to the device (%d UAPI log lines), want no IPC", n)
	}

	if changed, err := a.SetPeers([]tunnel.Peer{c.peer(), b.peer()}); err != nil || !changed {
		t.Fatalf("SetPeers(add c) = %v, %v; want changed", changed, err)
	}
	if uapiLines.Load() == 0 {
		t.Error("SetPeers(add c) left no UAPI trace in the log; is WithLogger wired?")
	}
	// Traffic to b after the change must ride the old session.
	if err := ping(b.v6); err != nil {
		t.Fatalf("ping b after adding c: %v", err)
	}
	if after := handshakeWith(t, a, b.pub); !after.Equal(before) {
		t.Errorf("handshake with b moved from %v to %v: adding c reset b's session", before, after)
	}
}

func handshakeWith(t *testing.T, n *node, k tunnel.Key) time.Time {
	t.Helper()
	st, err := n.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.PublicKey == k {
			return s.LastHandshake
		}
	}
	t.Fatalf("peer %v not in Peers()", k)
	return time.Time{}
}

// countingHandler counts wireguard-go's "UAPI:" debug lines, each of which
// means the device received an IpcSet.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "UAPI:") {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

func TestSetPeersRejectsInvalidInputAndKeepsPreviousState(t *testing.T) {
	a, b, c := newNode(t, 1), newNode(t, 2), newNode(t, 3)
	connectPair(t, a, b)
	want, err := a.Peers()
	if err != nil {
		t.Fatal(err)
	}

	stealer := c.peer()
	stealer.AllowedIPs = append(stealer.AllowedIPs, netip.MustParsePrefix("100.64.0.2/32"))
	zero := c.peer()
	zero.PublicKey = tunnel.Key{}
	badPrefix := c.peer()
	badPrefix.AllowedIPs = []netip.Prefix{{}}
	badKeepalive := c.peer()
	badKeepalive.PersistentKeepalive = -time.Second
	for name, peers := range map[string][]tunnel.Peer{
		"zero key":                     {b.peer(), zero},
		"duplicate key":                {b.peer(), c.peer(), c.peer()},
		"prefix claimed by two":        {b.peer(), stealer},
		"invalid prefix":               {badPrefix},
		"negative keepalive":           {badKeepalive},
		"prefix claimed after masking": {b.peer(), {PublicKey: c.pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd7a:115c::2/128")}}},
	} {
		changed, err := a.SetPeers(peers)
		if err == nil || changed {
			t.Errorf("%s: SetPeers = %v, %v; want an error", name, changed, err)
		} else if !strings.HasPrefix(err.Error(), "netstack: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
		got, err := a.Peers()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || got[0].PublicKey != want[0].PublicKey {
			t.Errorf("%s: peers after rejected SetPeers = %+v, want %+v", name, got, want)
		}
		if k, err := a.WhoIs(b.v4); err != nil || k != b.pub {
			t.Errorf("%s: WhoIs(b) after rejected SetPeers = %v, %v", name, k, err)
		}
		if _, err := a.WhoIs(c.v4); !errors.Is(err, tunnel.ErrNoPeer) {
			t.Errorf("%s: WhoIs(c) after rejected SetPeers: err = %v, want ErrNoPeer", name, err)
		}
	}
}

func TestCloseReleasesListenersConnectionsAndGoroutines(t *testing.T) {
	checkGoroutineLeaks(t)
	a, b := newNode(t, 1), newNode(t, 2)
	connectPair(t, a, b)
	l, err := b.ListenTCP(443)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
		_, err = l.Accept() // blocks until Close
		acceptErr <- err
	}()
	ac := dial(t, a, "tcp6", netip.AddrPortFrom(b.v6, 443))
	if _, err := ac.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var bc net.Conn
	select {
	case bc = <-accepted:
	case err := <-acceptErr:
		t.Fatalf("accept: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 10)
		for {
			if _, err := bc.Read(buf); err != nil {
				readErr <- err
				return
			}
		}
	}()

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, ch := range map[string]chan error{"blocked Accept": acceptErr, "blocked Read on accepted conn": readErr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s returned nil error after Close", name)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s still blocked 5s after Close", name)
		}
	}
	if _, err := b.ListenTCP(444); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenTCP after Close: err = %v, want net.ErrClosed", err)
	}
	if _, err := b.DialContext(context.Background(), "tcp", netip.AddrPortFrom(a.v4, 1).String()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialContext after Close: err = %v, want net.ErrClosed", err)
	}
	if _, err := b.SetPeers(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetPeers after Close: err = %v, want net.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("listener Close after tunnel Close: %v", err)
	}
	// The UDP port is free again.
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(b.ListenPort())})
	if err != nil {
		t.Errorf("UDP port %d still held after Close: %v", b.ListenPort(), err)
	} else {
		pc.Close()
	}
	bc.Close()
	ac.Close()
	a.Close()
}

func TestPeerWithWrongPublicKeyCannotBeReached(t *testing.T) {
	checkGoroutineLeaks(t)
	a, b := newNode(t, 1), newNode(t, 2)
	_, impostor := newKeyPair(t)
	wrong := b.peer()
	wrong.PublicKey = impostor
	mustSetPeers(t, a, wrong)    // a thinks b has another key
	mustSetPeers(t, b, a.peer()) // b is configured correctly
	l, err := b.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, l)

	cannotDial(t, a, netip.AddrPortFrom(b.v4, 80))
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := a.Ping(ctx, b.v4); err == nil {
		t.Error("ping to a peer with the wrong key succeeded")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping error = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ping ignored its context: returned after %v", d)
	}
	if st := handshakeWith(t, b, a.pub); !st.IsZero() {
		t.Errorf("b completed a handshake with a at %v", st)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	priv, _ := newKeyPair(t)
	v4 := netip.MustParseAddr("100.64.0.1")
	for name, cfg := range map[string]tunnel.Config{
		"zero key":     {Addresses: []netip.Addr{v4}},
		"no address":   {PrivateKey: priv},
		"4in6 address": {PrivateKey: priv, Addresses: []netip.Addr{netip.AddrFrom16(v4.As16())}},
		"tiny MTU":     {PrivateKey: priv, Addresses: []netip.Addr{v4}, MTU: 500},
	} {
		if tun, err := New(cfg); err == nil {
			tun.Close()
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}

func TestListenPortIsTheBoundOne(t *testing.T) {
	a := newNode(t, 1)
	if a.ListenPort() == 0 {
		t.Fatal("ListenPort() = 0 after binding a free port")
	}
	// A second tunnel on the same port must fail: the port really is bound.
	priv, _ := newKeyPair(t)
	tun, err := New(tunnel.Config{PrivateKey: priv, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.9")}, ListenPort: a.ListenPort()})
	if err == nil {
		tun.Close()
		t.Fatalf("second tunnel bound the same UDP port %d", a.ListenPort())
	}
}
