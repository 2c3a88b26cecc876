package wgconfig

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// uapiDevice runs a wireguard-go device with its UAPI socket under
// /var/run/wireguard, where wgctrl finds userspace implementations: the
// same path that wgctrl's netlink client takes to the kernel module, minus
// the module, which this machine lacks.
func uapiDevice(t *testing.T, name string) *device.Device {
	t.Helper()
	tdev, _, err := netstack.CreateNetTUN([]netip.Addr{netip.MustParseAddr("100.64.9.1")}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		dev.Close()
		t.Skipf("cannot open a UAPI socket (needs root for /var/run/wireguard): %v", err)
	}
	ln, err := ipc.UAPIListen(name, f)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		dev.Close()
		os.Remove("/var/run/wireguard/" + name + ".sock")
	})
	return dev
}

func randomKey(t *testing.T) tunnel.Key {
	t.Helper()
	var k tunnel.Key
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// peerLines keeps the peer configuration lines of a UAPI get, sorted, so
// two devices' states compare regardless of order and counters.
func peerLines(get string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(get, "\n") {
		k, _, _ := strings.Cut(l, "=")
		switch k {
		case "public_key":
			cur = l
		case "allowed_ip", "endpoint", "persistent_keepalive_interval":
			out = append(out, cur+" "+l)
		}
	}
	slices.Sort(out)
	return out
}

// TestWgctrlDeviceConfiguresLikeNativeUAPI drives two devices through the
// same sequence of peer sets: one with wireguard-go's own UAPI, one through
// wgctrl (WgctrlDevice, the path kernel WireGuard takes). Both must end in
// the same state after every step, and the wgctrl side must report its
// port and peers back.
func TestWgctrlDeviceConfiguresLikeNativeUAPI(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the wgctrl test needs root, and CI must run it")
		}
		t.Skip("the wgctrl test needs root (/var/run/wireguard)")
	}
	name := fmt.Sprintf("mcpwg%d", os.Getpid()%100000)
	viaWgctrl := uapiDevice(t, name)
	kd, err := OpenWgctrl(name)
	if err != nil {
		t.Fatal(err)
	}
	defer kd.Close()
	ntun, _, err := netstack.CreateNetTUN([]netip.Addr{netip.MustParseAddr("100.64.9.2")}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	native := device.NewDevice(ntun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer native.Close()

	priv := randomKey(t)
	pub, err := PublicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	port, err := Up(kd, priv, 0)
	if err != nil {
		t.Fatalf("Up through wgctrl: %v", err)
	}
	if port == 0 {
		t.Fatal("Up through wgctrl reports port 0")
	}
	if got, _ := ListenPort(viaWgctrl); got != port {
		t.Errorf("wgctrl side reports port %d, the device is on %d", port, got)
	}
	if _, err := Up(native, priv, 0); err != nil {
		t.Fatal(err)
	}

	a, b := randomKey(t), randomKey(t)
	peerA := tunnel.Peer{PublicKey: a, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd7a:115c:a1e0::2/128")},
		Endpoint: netip.MustParseAddrPort("10.0.0.2:51820"), PersistentKeepalive: 25 * time.Second}
	peerB := tunnel.Peer{PublicKey: b, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}, Endpoint: netip.MustParseAddrPort("[fd00::3]:41641")}
	movedA := peerA
	movedA.Endpoint = netip.MustParseAddrPort("10.0.0.9:51820")
	movedA.AllowedIPs = movedA.AllowedIPs[:1]

	pw, pn := NewPeers(kd, pub, nil), NewPeers(native, pub, nil)
	defer pw.Close()
	defer pn.Close()
	for i, set := range [][]tunnel.Peer{{peerA, peerB}, {movedA}, {movedA, peerB}, nil} {
		if _, err := pw.Set(set); err != nil {
			t.Fatalf("step %d: Set through wgctrl: %v", i, err)
		}
		if _, err := pn.Set(set); err != nil {
			t.Fatalf("step %d: Set through UAPI: %v", i, err)
		}
		gw, _ := viaWgctrl.IpcGet()
		gn, _ := native.IpcGet()
		if w, n := peerLines(gw), peerLines(gn); !slices.Equal(w, n) {
			t.Errorf("step %d: through wgctrl the device holds\n%s\nthrough UAPI\n%s", i, strings.Join(w, "\n"), strings.Join(n, "\n"))
		}
		st, err := pw.Status()
		if err != nil {
			t.Fatalf("step %d: Status through wgctrl: %v", i, err)
		}
		if len(st) != len(set) {
			t.Errorf("step %d: Status through wgctrl lists %d peers, want %d", i, len(st), len(set))
		}
		for _, s := range st {
			for _, p := range set {
				if p.PublicKey == s.PublicKey && s.Endpoint != p.Endpoint {
					t.Errorf("step %d: Status endpoint of %v = %v, want %v", i, s.PublicKey, s.Endpoint, p.Endpoint)
				}
			}
		}
	}
	if err := kd.IpcSet("fwmark=7\n"); err == nil {
		t.Error("a UAPI key the translation does not know was accepted")
	}
}
