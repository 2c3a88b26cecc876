// Package wgconfig is the mode-independent half of the mesh data plane: it
// drives a running wireguard-go device through its UAPI, whatever sits on
// the device's TUN side (a userspace netstack in tunnel/netstack, a kernel
// TUN interface in tunnel/kernel).
//
// It brings a device up with a private key and UDP port, turns each whole
// desired peer set into the smallest UAPI change (Peers.Set), reads peer
// status back, answers "which peer owns this address" without a lock, and
// staggers the first handshake of a new pair. It knows nothing of how
// packets reach the device, of MCP, of the coordinator or of node
// identities.
package wgconfig

import (
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/device"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Up sets the private key and UDP port of dev, brings it up (a device that
// has an Up method, as wireguard-go's does; a kernel interface comes up
// with its link) and returns the port the bind chose, which differs from
// listenPort when that was 0. On error dev is left as it was given (the
// caller closes it).
func Up(dev Device, priv tunnel.Key, listenPort uint16) (uint16, error) {
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", priv.Hex(), listenPort)
	if err := dev.IpcSet(uapi); err != nil {
		return 0, fmt.Errorf("wgconfig: configure device: %w", err)
	}
	if u, ok := dev.(interface{ Up() error }); ok {
		if err := u.Up(); err != nil {
			return 0, fmt.Errorf("wgconfig: bring device up on UDP port %d: %w", listenPort, err)
		}
	}
	return ListenPort(dev)
}

// ListenPort reads back the UDP port dev is bound to.
func ListenPort(dev Device) (uint16, error) {
	get, err := dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wgconfig: read device state: %w", err)
	}
	for line := range strings.Lines(get) {
		v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listen_port=")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("wgconfig: device reports listen_port %q: %w", v, err)
		}
		return uint16(p), nil
	}
	return 0, errors.New("wgconfig: device reports no listen_port")
}

// PublicKey derives the Curve25519 public key of a WireGuard private key.
func PublicKey(priv tunnel.Key) (tunnel.Key, error) {
	var pub tunnel.Key
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, fmt.Errorf("wgconfig: private key: %w", err)
	}
	copy(pub[:], k.PublicKey().Bytes())
	return pub, nil
}

// NewLogger adapts wireguard-go's printf logger to slog; nil discards. Both
// of its levels go to debug: what wireguard-go calls errors (a lost
// handshake, an unreachable endpoint) are normal events on a mesh, and the
// ones a caller must act on come back as returned errors.
func NewLogger(l *slog.Logger) *device.Logger {
	if l == nil {
		return &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	l = l.With("component", "wireguard")
	logf := func(level string) func(string, ...any) {
		return func(format string, args ...any) {
			l.Debug(fmt.Sprintf(format, args...), "wg_level", level)
		}
	}
	return &device.Logger{Verbosef: logf("verbose"), Errorf: logf("error")}
}

// uapiLines calls fn with the key and value of each line of a UAPI text,
// skipping blank lines; a line without '=' is an error. Both directions
// use it: reading a device's state, and translating UAPI for wgctrl.
func uapiLines(text string, fn func(key, val string) error) error {
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("wgconfig: UAPI line %q has no '='", line)
		}
		if err := fn(key, val); err != nil {
			return err
		}
	}
	return nil
}

// parseHexKey parses a key as UAPI writes it: 32 bytes in hex.
func parseHexKey(s string) (tunnel.Key, error) {
	var k tunnel.Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("not a %d-byte hex key", len(k))
	}
	copy(k[:], b)
	return k, nil
}
