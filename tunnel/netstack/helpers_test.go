package netstack

import (
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// node is one tunnel under test with the keys and addresses peers need.
type node struct {
	*Tunnel
	priv, pub tunnel.Key
	v4, v6    netip.Addr
}

func newKeyPair(t testing.TB) (priv, pub tunnel.Key) {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	return priv, pub
}

// newNode brings up tunnel number i (1..254) on 100.64.0.i and fd7a:115c::i,
// bound to a free UDP port, and closes it when the test ends.
func newNode(t testing.TB, i int, opts ...Option) *node {
	t.Helper()
	n := &node{
		v4: netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}),
		v6: netip.MustParseAddr(fmt.Sprintf("fd7a:115c::%x", i)),
	}
	n.priv, n.pub = newKeyPair(t)
	tun, err := New(tunnel.Config{PrivateKey: n.priv, Addresses: []netip.Addr{n.v4, n.v6}}, opts...)
	if err != nil {
		t.Fatalf("New(node %d): %v", i, err)
	}
	t.Cleanup(func() { tun.Close() })
	n.Tunnel = tun
	return n
}

// peer describes n as a peer reachable over loopback UDP.
func (n *node) peer() tunnel.Peer {
	return tunnel.Peer{
		PublicKey:  n.pub,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(n.v4, 32), netip.PrefixFrom(n.v6, 128)},
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.ListenPort()),
	}
}

func mustSetPeers(t testing.TB, n *node, peers ...tunnel.Peer) {
	t.Helper()
	if _, err := n.SetPeers(peers); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
}

// echoServer accepts on l and echoes every connection until l closes; it
// records the remote address of each accepted connection.
type echoServer struct {
	mu      sync.Mutex
	remotes []net.Addr
	conns   []net.Conn
	wg      sync.WaitGroup
}

func serveEcho(t testing.TB, l net.Listener) *echoServer {
	t.Helper()
	s := &echoServer{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.remotes = append(s.remotes, c.RemoteAddr())
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		// A peer that was cut off never sends its FIN: close our side.
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) lastRemote() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.remotes) == 0 {
		return nil
	}
	return s.remotes[len(s.remotes)-1]
}

// roundTrip writes msg on c and reads the echo back within a few seconds.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

var goroutineHeader = regexp.MustCompile(`^goroutine (\d+) \[`)

// goroutines returns the stacks of all goroutines keyed by id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if m := goroutineHeader.FindStringSubmatch(g); m != nil {
			out[m[1]] = g
		}
	}
	return out
}

// checkGoroutineLeaks fails t if goroutines started during the test are
// still running a few seconds after it ended (after all later cleanups, such
// as closing tunnels, ran). Call it first in a test.
func checkGoroutineLeaks(t *testing.T) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		var leaked []string
		for deadline := time.Now().Add(5 * time.Second); ; {
			leaked = leaked[:0]
			for id, g := range goroutines() {
				if _, ok := before[id]; ok || ignorableGoroutine(g) {
					continue
				}
				leaked = append(leaked, g)
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			slices.Sort(leaked)
			t.Errorf("%d goroutines leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// ignorableGoroutine is true for the goroutine running the check and for
// goroutines with no frame of ours or of the data plane (the runtime's and
// the test framework's own).
func ignorableGoroutine(stack string) bool {
	if strings.Contains(stack, "netstack.goroutines(") {
		return true
	}
	for _, s := range []string{"mcpmesh", "golang.zx2c4.com/wireguard", "gvisor.dev"} {
		if strings.Contains(stack, s) {
			return false
		}
	}
	return true
}
