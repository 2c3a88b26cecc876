package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/netstack"
)

// The userspace mesh: two netstack tunnels in this process, joined over
// loopback UDP. The addresses exist only inside the process.
var (
	userspaceA = netip.MustParseAddr("100.64.7.1")
	userspaceB = netip.MustParseAddr("100.64.7.2")
)

const benchPort = 5201

// cmdUserspace measures one in-process path: "mesh" (client and server on
// two netstack tunnels) or "loopback" (the same client and server over
// 127.0.0.1 TCP, the baseline). Both run the same load code in one process.
func cmdUserspace(args []string) error {
	fs := flag.NewFlagSet("userspace", flag.ContinueOnError)
	var lf loadFlags
	lf.register(fs)
	mode := fs.String("mode", "mesh", `"mesh" (two netstack tunnels over loopback UDP) or "loopback" (plain TCP on 127.0.0.1)`)
	streamList := fs.String("streams", "1,4", "comma-separated stream counts, one transfer each")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measurements (not the setup) here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var streams []int
	for s := range strings.SplitSeq(*streamList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-streams %q: want positive integers", *streamList)
		}
		streams = append(streams, n)
	}

	var (
		l    net.Listener
		dial dialFunc
	)
	switch *mode {
	case "loopback":
		ll, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		l, dial = ll, tcpDial(ll.Addr().String())
	case "mesh":
		a, b, err := userspacePair()
		if err != nil {
			return err
		}
		defer a.Close()
		defer b.Close()
		tl, err := b.ListenTCP(benchPort)
		if err != nil {
			return fmt.Errorf("listen on the mesh: %w", err)
		}
		l = tl
		dst := netip.AddrPortFrom(userspaceB, benchPort).String()
		dial = func(ctx context.Context) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return a.DialContext(ctx, "tcp", dst)
		}
	default:
		return fmt.Errorf("-mode %q: want mesh or loopback", *mode)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); serve(ctx, l) }()
	defer func() { cancel(); <-served }()

	// The first dial over the mesh waits for the handshake; keep it out of
	// the figures.
	if _, err := rtt(ctx, dial, 1, lf.size, 15*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	stop, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stop()
	for _, n := range streams {
		r, err := bulk(ctx, dial, n, lf.bytes, lf.duration)
		if err != nil {
			return fmt.Errorf("%s, %d streams: %w", *mode, n, err)
		}
		if err := printResult(lf.label(r)); err != nil {
			return err
		}
	}
	r, err := rtt(ctx, dial, lf.count, lf.size, lf.duration)
	if err != nil {
		return fmt.Errorf("%s: %w", *mode, err)
	}
	return printResult(lf.label(r))
}

// userspacePair brings up two netstack tunnels that are each other's peer
// over loopback UDP.
func userspacePair() (a, b *netstack.Tunnel, err error) {
	privA, pubA, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	privB, pubB, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	a, err = netstack.New(tunnel.Config{PrivateKey: privA, Addresses: []netip.Addr{userspaceA}})
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel a: %w", err)
	}
	b, err = netstack.New(tunnel.Config{PrivateKey: privB, Addresses: []netip.Addr{userspaceB}})
	if err != nil {
		a.Close()
		return nil, nil, fmt.Errorf("tunnel b: %w", err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	_, errA := a.SetPeers([]tunnel.Peer{{
		PublicKey:  pubB,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(userspaceB, 32)},
		Endpoint:   netip.AddrPortFrom(lo, b.ListenPort()),
	}})
	_, errB := b.SetPeers([]tunnel.Peer{{
		PublicKey:  pubA,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(userspaceA, 32)},
		Endpoint:   netip.AddrPortFrom(lo, a.ListenPort()),
	}})
	if err := errors.Join(errA, errB); err != nil {
		a.Close()
		b.Close()
		return nil, nil, fmt.Errorf("set peers: %w", err)
	}
	return a, b, nil
}

// newKey makes a WireGuard (X25519) key pair.
func newKey() (priv, pub tunnel.Key, err error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return priv, pub, fmt.Errorf("generate key: %w", err)
	}
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	return priv, pub, nil
}

func cmdKeygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	priv, pub, err := newKey()
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s %s\n", priv, pub)
	return err
}
