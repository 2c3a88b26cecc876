package node

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Files of a node's state directory. Secrets are 0600 and every file is
// written atomically, so a crash never leaves half a key behind.
const (
	fileWireGuardKey = "wireguard.key"
	fileIdentityKey  = "identity.key"
	fileSVID         = "svid.pem"
	fileBundle       = "bundle.pem"
	fileNode         = "node.json"
	fileNetmap       = "netmap.json"
	// DigestKeyFile keys the argument digests of the node's audit events
	// (mcp.ArgsDigest): whoever holds it can check candidate arguments.
	DigestKeyFile = "audit-digest.key"
	// SocketName is the LocalAPI's unix socket inside the state directory.
	SocketName = "mcpmesh.sock"
)

// enrolled is what enrollment decided, kept so a restart needs no token.
type enrolled struct {
	Name        string `json:"name"`
	ID          string `json:"id"`
	Coordinator string `json:"coordinator"`
	NetmapKey   []byte `json:"netmapKey"`
	// ListenPort is the WireGuard port chosen at enrollment and kept, so
	// peers' endpoints for this node stay right across restarts.
	ListenPort uint16 `json:"listenPort,omitempty"`
}

// stateDir reads and writes one node's state directory.
type stateDir struct{ dir string }

func (s stateDir) path(name string) string { return filepath.Join(s.dir, name) }

func (s stateDir) ensure() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("node: state directory %s: %w", s.dir, err)
	}
	if err := identity.CheckPrivateDir(s.dir); err != nil {
		return fmt.Errorf("node: state %w (--state)", err)
	}
	return nil
}

// loadOrCreate reads the secret in the state file name with parse or, when
// there is none yet, makes one with create and writes its encoding there
// (0600, atomically), so that a node keeps its keys across restarts.
func loadOrCreate[T any](s stateDir, name string, parse func([]byte) (T, error), create func() (T, []byte, error)) (T, error) {
	var zero T
	b, err := os.ReadFile(s.path(name))
	if err == nil {
		return parse(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return zero, fmt.Errorf("node: %w", err)
	}
	k, enc, err := create()
	if err != nil {
		return zero, err
	}
	if err := identity.WriteFileAtomic(s.path(name), enc, 0o600); err != nil {
		return zero, err
	}
	return k, nil
}

// wireGuardKey loads the node's WireGuard private key, creating it once.
func (s stateDir) wireGuardKey() (tunnel.Key, error) {
	return loadOrCreate(s, fileWireGuardKey, func(b []byte) (tunnel.Key, error) {
		return tunnel.ParseKey(strings.TrimSpace(string(b)))
	}, func() (tunnel.Key, []byte, error) {
		var k tunnel.Key
		if _, err := rand.Read(k[:]); err != nil {
			return k, nil, fmt.Errorf("node: generate WireGuard key: %w", err)
		}
		// Clamp as Curve25519 requires (wg genkey does the same).
		k[0] &= 248
		k[31] = (k[31] & 127) | 64
		return k, []byte(k.String() + "\n"), nil
	})
}

// digestKey loads the key of the node's audit argument digests, creating
// it once: the same arguments keep the same digest across restarts.
func (s stateDir) digestKey() ([]byte, error) {
	path := s.path(DigestKeyFile)
	return loadOrCreate(s, DigestKeyFile, func(b []byte) ([]byte, error) {
		return parseDigestKey(path, b)
	}, func() ([]byte, []byte, error) {
		k := make([]byte, 32)
		rand.Read(k) // never fails (crypto/rand)
		return k, []byte(hex.EncodeToString(k) + "\n"), nil
	})
}

// ReadDigestKey reads a node's audit digest key file (DigestKeyFile in its
// state directory), for `mcpmesh audit digest`.
func ReadDigestKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: audit digest key: %w", err)
	}
	return parseDigestKey(path, b)
}

func parseDigestKey(path string, b []byte) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("node: audit digest key %s: not 64 hex digits", path)
	}
	return k, nil
}

// publicKey derives the WireGuard public key.
func publicKey(priv tunnel.Key) (tunnel.Key, error) {
	var pub tunnel.Key
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, fmt.Errorf("node: derive WireGuard public key: %w", err)
	}
	copy(pub[:], k.PublicKey().Bytes())
	return pub, nil
}

// identityKey loads the key the node's SVIDs are issued for, creating it once.
func (s stateDir) identityKey() (crypto.Signer, error) {
	return loadOrCreate(s, fileIdentityKey, identity.ParseKeyPEM, func() (crypto.Signer, []byte, error) {
		k, err := identity.GenerateKey()
		if err != nil {
			return nil, nil, err
		}
		pemKey, err := identity.EncodeKeyPEM(k)
		return k, pemKey, err
	})
}

// enrolled returns the enrollment record, or nil when the node never enrolled.
func (s stateDir) enrolled() (*enrolled, error) {
	b, err := os.ReadFile(s.path(fileNode))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var e enrolled
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("node: %s: %w", fileNode, err)
	}
	if len(e.NetmapKey) != ed25519.PublicKeySize || e.Name == "" || e.Coordinator == "" {
		return nil, fmt.Errorf("node: %s is incomplete; remove the state directory and enroll again", s.path(fileNode))
	}
	return &e, nil
}

func (s stateDir) saveEnrolled(e *enrolled) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("node: encode %s: %w", fileNode, err)
	}
	return identity.WriteFileAtomic(s.path(fileNode), append(b, '\n'), 0o600)
}

// credential loads the SVID chain and bundle, paired with the identity key.
func (s stateDir) credential(key crypto.Signer) (*identity.Credential, error) {
	cb, err := os.ReadFile(s.path(fileSVID))
	if err != nil {
		return nil, fmt.Errorf("node: SVID: %w", err)
	}
	certs, err := identity.ParseCertsPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("node: SVID: %w", err)
	}
	bb, err := os.ReadFile(s.path(fileBundle))
	if err != nil {
		return nil, fmt.Errorf("node: bundle: %w", err)
	}
	roots, err := identity.ParseCertsPEM(bb)
	if err != nil {
		return nil, fmt.Errorf("node: bundle: %w", err)
	}
	return &identity.Credential{Certs: certs, Key: key, Roots: roots}, nil
}

// saveSVID writes a new SVID chain and bundle (bundle first, so a crash in
// between leaves an old SVID that the new bundle still verifies).
func (s stateDir) saveSVID(svidPEM, bundlePEM []byte) error {
	if err := identity.WriteFileAtomic(s.path(fileBundle), bundlePEM, 0o644); err != nil {
		return err
	}
	return identity.WriteFileAtomic(s.path(fileSVID), svidPEM, 0o600)
}

// netmap loads the last verified netmap, or nil.
func (s stateDir) netmap() (*controlclient.Netmap, error) {
	b, err := os.ReadFile(s.path(fileNetmap))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var nm controlclient.Netmap
	if err := json.Unmarshal(b, &nm); err != nil {
		return nil, fmt.Errorf("node: %s: %w", fileNetmap, err)
	}
	return &nm, nil
}

func (s stateDir) saveNetmap(nm *controlclient.Netmap) error {
	b, err := json.Marshal(nm)
	if err != nil {
		return fmt.Errorf("node: encode netmap: %w", err)
	}
	return identity.WriteFileAtomic(s.path(fileNetmap), b, 0o600)
}

// freeUDPPort finds a port free for UDP on both IPv4 and IPv6 wildcard
// addresses, as wireguard-go binds both. Another process may take it before
// the tunnel binds; the tunnel then fails clearly and a restart picks again.
func freeUDPPort() (uint16, error) {
	var lastErr error
	for range 20 {
		c4, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return 0, fmt.Errorf("node: find a free UDP port: %w", err)
		}
		port := c4.LocalAddr().(*net.UDPAddr).Port
		c6, err := net.ListenUDP("udp6", &net.UDPAddr{Port: port})
		c4.Close()
		if err != nil {
			lastErr = err
			continue
		}
		c6.Close()
		return uint16(port), nil
	}
	return 0, fmt.Errorf("node: find a free UDP port: %w", lastErr)
}
