package netstack

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// A caller that vanishes without a word (here: removed from the serving
// node's peers, so nothing it sends arrives and nothing reaches it) must
// not hold an accepted connection open for good: keep-alive probes go
// unanswered and a read blocked on the connection fails. Without
// keep-alive the same read is still blocked, which is what the second
// listener shows.
func TestAcceptedConnectionOfAVanishedPeerFails(t *testing.T) {
	checkGoroutineLeaks(t)
	ka := Keepalive{Idle: 500 * time.Millisecond, Interval: 250 * time.Millisecond, Count: 2}
	a := newNode(t, 1)
	b := newNode(t, 2, WithKeepalive(ka))
	c := newNode(t, 3, WithKeepalive(Keepalive{}))
	for _, srv := range []*node{b, c} {
		mustSetPeers(t, srv, a.peer())
	}
	mustSetPeers(t, a, b.peer(), c.peer())

	// accepted returns the server side of a connection from a to srv, after
	// a byte in each direction.
	accepted := func(srv *node) net.Conn {
		t.Helper()
		l, err := srv.ListenTCP(80)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		got := make(chan net.Conn, 1)
		go func() {
			sc, err := l.Accept()
			if err != nil {
				close(got)
				return
			}
			got <- sc
		}()
		cc := dial(t, a, "tcp", netip.AddrPortFrom(srv.v4, 80))
		sc, ok := <-got
		if !ok {
			t.Fatal("accept failed")
		}
		t.Cleanup(func() { sc.Close() })
		if _, err := cc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		sc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := sc.Read(buf); err != nil {
			t.Fatalf("first byte: %v", err)
		}
		sc.SetReadDeadline(time.Time{})
		return sc
	}
	withKA, withoutKA := accepted(b), accepted(c)

	// a goes away in silence, as far as b and c can tell.
	mustSetPeers(t, b)
	mustSetPeers(t, c)

	read := func(sc net.Conn) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := sc.Read(make([]byte, 1))
			done <- err
		}()
		return done
	}
	kaDone, noKADone := read(withKA), read(withoutKA)
	select {
	case err := <-kaDone:
		if err == nil {
			t.Fatal("read on the vanished peer's connection returned data")
		}
		t.Logf("with keep-alive: read failed as it should: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("with keep-alive, the vanished peer's connection still blocks a read after 10 s (probes every 250 ms, 2 allowed)")
	}
	select {
	case err := <-noKADone:
		t.Fatalf("without keep-alive the read ended (%v): this test no longer shows what keep-alive changes", err)
	default:
	}
	withoutKA.Close() // ends its read
	<-noKADone
}

// The caller's side of the same: a service's node that vanishes does not
// leave the caller waiting on the connection for good.
func TestDialedConnectionToAVanishedPeerFails(t *testing.T) {
	checkGoroutineLeaks(t)
	ka := Keepalive{Idle: 500 * time.Millisecond, Interval: 250 * time.Millisecond, Count: 2}
	a := newNode(t, 1, WithKeepalive(ka))
	b := newNode(t, 2)
	connectPair(t, a, b)
	l, err := b.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	serveEcho(t, l)
	cc := dial(t, a, "tcp", netip.AddrPortFrom(b.v4, 80))
	roundTrip(t, cc, "before")
	cc.SetDeadline(time.Time{})

	mustSetPeers(t, a) // b goes away in silence
	done := make(chan error, 1)
	go func() {
		_, err := cc.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read on the vanished peer's connection returned data")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to a vanished peer still blocks a read after 10 s (probes every 250 ms, 2 allowed)")
	}
}

// A keep-alive that would drop healthy connections is refused up front.
func TestNewRefusesAKeepaliveWithoutIntervalOrCount(t *testing.T) {
	for _, ka := range []Keepalive{{Idle: time.Second}, {Idle: time.Second, Interval: time.Second}, {Idle: time.Second, Count: 3}, {Idle: time.Second, Interval: -time.Second, Count: 3}} {
		priv, _ := newKeyPair(t)
		tun, err := New(tunnel.Config{PrivateKey: priv, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.9")}}, WithKeepalive(ka))
		if err == nil {
			tun.Close()
			t.Errorf("New with keep-alive %+v succeeded, want an error", ka)
		}
	}
}
