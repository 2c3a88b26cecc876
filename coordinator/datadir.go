package coordinator

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mcpmesh/mcpmesh/identity"
)

// Files of a coordinator's data directory.
const (
	fileConfig    = "config.json"
	fileNetmapKey = "netmap.key"
	fileDB        = "coordinator.db"
	// FileAdmin is the admin credential that `coordinator init` writes and
	// the CLI reads with --data.
	FileAdmin = "admin.pem"
)

// adminTTL is how long the initial admin credential is valid. It is long
// because it is the only way in; rotating it is a later admin command.
const adminTTL = 365 * 24 * time.Hour

// diskConfig is what `coordinator init` decides once and `run` reads.
type diskConfig struct {
	TrustDomain string `json:"trustDomain"`
}

// Init creates a coordinator's data directory: the trust domain's CA, the
// netmap signing key, the admin credential and an empty store. It refuses a
// directory that already holds a coordinator, so a mistyped command cannot
// replace a trust domain's CA.
func Init(dir, trustDomain string, now time.Time) error {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return fmt.Errorf("coordinator: trust domain %q: %w", trustDomain, err)
	}
	if _, err := os.Stat(filepath.Join(dir, fileConfig)); err == nil {
		return fmt.Errorf("coordinator: %s already holds a coordinator; refusing to overwrite its CA", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("coordinator: create %s: %w", dir, err)
	}
	// Whoever can write the directory can rename their own CA key over
	// ours: it must be private before a CA is made in it.
	if err := identity.CheckPrivateDir(dir); err != nil {
		return fmt.Errorf("coordinator: data %w", err)
	}
	ca, err := identity.NewCA(td, now)
	if err != nil {
		return err
	}
	if err := ca.Save(dir); err != nil {
		return err
	}
	_, nmKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("coordinator: netmap key: %w", err)
	}
	pemKey, err := identity.EncodeKeyPEM(nmKey)
	if err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(filepath.Join(dir, fileNetmapKey), pemKey, 0o600); err != nil {
		return err
	}
	cred, err := issueAdmin(ca, "admin", now)
	if err != nil {
		return err
	}
	b, err := cred.Marshal()
	if err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(filepath.Join(dir, FileAdmin), b, 0o600); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(diskConfig{TrustDomain: td.Name()}, "", "  ")
	if err != nil {
		return fmt.Errorf("coordinator: encode config: %w", err)
	}
	// The config file is written last: its presence means init completed.
	return identity.WriteFileAtomic(filepath.Join(dir, fileConfig), append(cfg, '\n'), 0o600)
}

func issueAdmin(ca *identity.CA, name string, now time.Time) (*identity.Credential, error) {
	id, err := identity.AdminID(ca.TrustDomain(), name)
	if err != nil {
		return nil, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.SignSVID(csr, id, adminTTL, now)
	if err != nil {
		return nil, err
	}
	return &identity.Credential{Certs: []*x509.Certificate{leaf}, Key: key, Roots: []*x509.Certificate{ca.Certificate()}}, nil
}

// loaded is a data directory read back by Open.
type loaded struct {
	td        spiffeid.TrustDomain
	ca        *identity.CA
	netmapKey ed25519.PrivateKey
}

func loadDataDir(dir string) (*loaded, error) {
	if err := identity.CheckPrivateDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("coordinator: %s is not a coordinator data directory; run `mcpmesh coordinator init --data %s` first", dir, dir)
		}
		return nil, fmt.Errorf("coordinator: data %w; its CA and netmap keys cannot be trusted until it is", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, fileConfig))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("coordinator: %s is not a coordinator data directory; run `mcpmesh coordinator init --data %s` first", dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	var cfg diskConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("coordinator: %s: %w", fileConfig, err)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %s: trust domain: %w", fileConfig, err)
	}
	ca, err := identity.LoadCA(dir)
	if err != nil {
		return nil, err
	}
	if ca.TrustDomain() != td {
		return nil, fmt.Errorf("coordinator: CA is for %s but config says %s", ca.TrustDomain(), td)
	}
	kb, err := os.ReadFile(filepath.Join(dir, fileNetmapKey))
	if err != nil {
		return nil, fmt.Errorf("coordinator: netmap key: %w", err)
	}
	k, err := identity.ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("coordinator: netmap key: %w", err)
	}
	nk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("coordinator: netmap key is %T, want ed25519", k)
	}
	return &loaded{td: td, ca: ca, netmapKey: nk}, nil
}
