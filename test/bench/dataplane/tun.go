package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/kernel"
)

// peerFlags describe the one peer of a two-node benchmark mesh.
type peerFlags struct {
	key, peer, allowed, endpoint string
	port                         uint
}

func (p *peerFlags) register(fs *flag.FlagSet, defPort uint) {
	fs.StringVar(&p.key, "key", "", "this node's private key (base64)")
	fs.UintVar(&p.port, "port", defPort, "this node's WireGuard UDP port")
	fs.StringVar(&p.peer, "peer", "", "the peer's public key (base64)")
	fs.StringVar(&p.allowed, "peer-allowed", "", "the peer's allowed IPs (a prefix)")
	fs.StringVar(&p.endpoint, "peer-endpoint", "", "the peer's WireGuard endpoint (ip:port)")
}

func (p *peerFlags) parse() (priv tunnel.Key, peer tunnel.Peer, err error) {
	if priv, err = tunnel.ParseKey(p.key); err != nil {
		return priv, peer, fmt.Errorf("-key: %w", err)
	}
	if peer.PublicKey, err = tunnel.ParseKey(p.peer); err != nil {
		return priv, peer, fmt.Errorf("-peer: %w", err)
	}
	pfx, err := netip.ParsePrefix(p.allowed)
	if err != nil {
		return priv, peer, fmt.Errorf("-peer-allowed: %w", err)
	}
	peer.AllowedIPs = []netip.Prefix{pfx}
	if peer.Endpoint, err = netip.ParseAddrPort(p.endpoint); err != nil {
		return priv, peer, fmt.Errorf("-peer-endpoint: %w", err)
	}
	if p.port == 0 || p.port > 65535 {
		return priv, peer, fmt.Errorf("-port %d out of range", p.port)
	}
	return priv, peer, nil
}

// cmdTun runs a kernel-mode mcpmesh tunnel (package tunnel/kernel, exactly
// as a node runs it) in the current network namespace with one peer, prints
// "ready" and stays up until stdin closes, a signal or -lifetime; then it
// closes the tunnel, which removes the interface.
func cmdTun(args []string) error {
	fs := flag.NewFlagSet("tun", flag.ContinueOnError)
	var pf peerFlags
	pf.register(fs, 51820)
	name := fs.String("name", kernel.DefaultName, "interface name")
	addr := fs.String("addr", "", "this node's mesh address")
	mtu := fs.Int("mtu", 0, "interface MTU (0: the tunnel's default)")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "stop after this long")
	watchStdin := fs.Bool("stdin", true, "stop when stdin closes")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the tunnel's whole life here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	priv, peer, err := pf.parse()
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	stop, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stop()
	t, err := kernel.New(tunnel.Config{
		PrivateKey: priv,
		Addresses:  []netip.Addr{a},
		ListenPort: uint16(pf.port),
		MTU:        *mtu,
	}, kernel.WithName(*name))
	if err != nil {
		return fmt.Errorf("bring the tunnel up: %w", err)
	}
	defer t.Close()
	if _, err := t.SetPeers([]tunnel.Peer{peer}); err != nil {
		return fmt.Errorf("set peers: %w", err)
	}
	ctx, cancel := stopContext(*lifetime, *watchStdin)
	defer cancel()
	fmt.Printf("ready %s port %d\n", t.Name(), t.ListenPort())
	<-ctx.Done()
	if err := t.Close(); err != nil {
		return fmt.Errorf("close the tunnel: %w", err)
	}
	return nil
}

// cmdWGSet configures a bare wireguard-go device (started by the script as
// "wireguard -f NAME") through its UAPI socket, as wg(8) would, so the
// comparison needs no wireguard-tools.
func cmdWGSet(args []string) error {
	fs := flag.NewFlagSet("wgset", flag.ContinueOnError)
	var pf peerFlags
	pf.register(fs, 51821)
	sock := fs.String("sock", "", "the device's UAPI socket (/var/run/wireguard/NAME.sock)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	priv, peer, err := pf.parse()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "set=1\nprivate_key=%s\nlisten_port=%d\nreplace_peers=true\n", priv.Hex(), pf.port)
	fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n\n",
		peer.PublicKey.Hex(), peer.Endpoint, peer.AllowedIPs[0])
	c, err := net.DialTimeout("unix", *sock, 5*time.Second)
	if err != nil {
		return fmt.Errorf("UAPI socket: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("UAPI set: %w", err)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok && v != "0" {
			return fmt.Errorf("UAPI set: device answered errno=%s", v)
		} else if ok {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("UAPI set: read answer: %w", err)
	}
	return fmt.Errorf("UAPI set: no errno in the answer")
}
