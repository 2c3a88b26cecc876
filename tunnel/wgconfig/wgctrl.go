package wgconfig

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Device is what this package drives: the UAPI of a WireGuard device.
// wireguard-go's *device.Device is one; WgctrlDevice puts the same text in
// front of a device that wgctrl configures, such as the kernel's WireGuard,
// so the peer diffing, WhoIs and handshake staggering are the same code for
// every data plane.
type Device interface {
	IpcSet(uapiConf string) error
	IpcGet() (string, error)
}

// WgctrlDevice speaks UAPI to a WireGuard interface through wgctrl
// (netlink for the kernel module; the UAPI socket of a userspace
// implementation). It translates the subset of UAPI that this package
// writes and reads; anything else is refused, not ignored.
type WgctrlDevice struct {
	name   string
	client *wgctrl.Client
}

// OpenWgctrl opens the WireGuard interface name through wgctrl.
func OpenWgctrl(name string) (*WgctrlDevice, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wgconfig: wgctrl: %w", err)
	}
	if _, err := c.Device(name); err != nil {
		c.Close()
		return nil, fmt.Errorf("wgconfig: wgctrl: device %s: %w", name, err)
	}
	return &WgctrlDevice{name: name, client: c}, nil
}

// Close releases the wgctrl client; the interface stays.
func (d *WgctrlDevice) Close() error { return d.client.Close() }

// IpcSet applies a UAPI "set" text in one wgctrl configuration.
func (d *WgctrlDevice) IpcSet(uapi string) error {
	cfg, err := parseUAPISet(uapi)
	if err != nil {
		return err
	}
	if err := d.client.ConfigureDevice(d.name, cfg); err != nil {
		return fmt.Errorf("wgconfig: configure %s: %w", d.name, err)
	}
	return nil
}

// IpcGet renders the device's state as a UAPI "get" text.
func (d *WgctrlDevice) IpcGet() (string, error) {
	dev, err := d.client.Device(d.name)
	if err != nil {
		return "", fmt.Errorf("wgconfig: read %s: %w", d.name, err)
	}
	return formatUAPIGet(dev), nil
}

// parseUAPISet turns the UAPI lines this package writes into a wgctrl
// configuration.
func parseUAPISet(uapi string) (wgtypes.Config, error) {
	var cfg wgtypes.Config
	var peer *wgtypes.PeerConfig
	flush := func() {
		if peer != nil {
			cfg.Peers = append(cfg.Peers, *peer)
			peer = nil
		}
	}
	err := uapiLines(uapi, func(key, val string) error {
		bad := func(err error) error {
			return fmt.Errorf("wgconfig: UAPI %s=%q: %w", key, val, err)
		}
		if key == "public_key" {
			flush()
			k, err := parseHexKey(val)
			if err != nil {
				return bad(err)
			}
			peer = &wgtypes.PeerConfig{PublicKey: wgtypes.Key(k)}
			return nil
		}
		if peer == nil {
			switch key {
			case "private_key":
				k, err := parseHexKey(val)
				if err != nil {
					return bad(err)
				}
				pk := wgtypes.Key(k)
				cfg.PrivateKey = &pk
			case "listen_port":
				p, err := strconv.ParseUint(val, 10, 16)
				if err != nil {
					return bad(err)
				}
				port := int(p)
				cfg.ListenPort = &port
			case "replace_peers":
				cfg.ReplacePeers = val == "true"
			default:
				return fmt.Errorf("wgconfig: UAPI device key %q is not supported over wgctrl", key)
			}
			return nil
		}
		switch key {
		case "remove":
			peer.Remove = val == "true"
		case "update_only":
			peer.UpdateOnly = val == "true"
		case "replace_allowed_ips":
			peer.ReplaceAllowedIPs = val == "true"
		case "allowed_ip":
			p, err := netip.ParsePrefix(val)
			if err != nil {
				return bad(err)
			}
			peer.AllowedIPs = append(peer.AllowedIPs, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
		case "endpoint":
			ap, err := netip.ParseAddrPort(val)
			if err != nil {
				return bad(err)
			}
			peer.Endpoint = net.UDPAddrFromAddrPort(ap)
		case "persistent_keepalive_interval":
			s, err := strconv.ParseUint(val, 10, 16)
			if err != nil {
				return bad(err)
			}
			d := time.Duration(s) * time.Second
			peer.PersistentKeepaliveInterval = &d
		default:
			return fmt.Errorf("wgconfig: UAPI peer key %q is not supported over wgctrl", key)
		}
		return nil
	})
	if err != nil {
		return cfg, err
	}
	flush()
	return cfg, nil
}

// formatUAPIGet renders what parsePeerStatus and ListenPort read.
func formatUAPIGet(dev *wgtypes.Device) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen_port=%d\n", dev.ListenPort)
	for _, p := range dev.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			fmt.Fprintf(&b, "endpoint=%s\n", netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
		if !p.LastHandshakeTime.IsZero() {
			fmt.Fprintf(&b, "last_handshake_time_sec=%d\nlast_handshake_time_nsec=%d\n", p.LastHandshakeTime.Unix(), p.LastHandshakeTime.Nanosecond())
		}
		fmt.Fprintf(&b, "rx_bytes=%d\ntx_bytes=%d\n", p.ReceiveBytes, p.TransmitBytes)
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval/time.Second))
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return b.String()
}
