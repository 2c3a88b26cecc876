package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// PEM block types this package writes and reads.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// GenerateKey returns a new ECDSA P-256 key, the one key type the mesh uses
// for SVIDs and the CA: small certificates and fast handshakes, and supported
// by every TLS stack we talk to.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return key, nil
}

// NewCSR returns a DER certificate signing request for id, signed by key. The
// CSR carries id as its only URI SAN and nothing else, which is exactly what
// CA.SignSVID requires; the private key never leaves the node.
func NewCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	if id.IsZero() {
		return nil, errors.New("identity: CSR: empty SPIFFE ID")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("identity: CSR for %s: %w", id, err)
	}
	return der, nil
}

// EncodeCertsPEM returns certs as consecutive PEM CERTIFICATE blocks, in
// order, the form used by ca.crt, bundles and credential files.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw}) // writes to a bytes.Buffer cannot fail
	}
	return buf.Bytes()
}

// ParseCertsPEM parses PEM CERTIFICATE blocks, in order. It is strict because
// its input is trust material: it fails on no certificate, on any block of
// another type, on a bad certificate and on non-PEM bytes between or after
// blocks.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEM(b)
	if err != nil {
		return nil, err
	}
	if len(blocks) == 0 {
		return nil, errors.New("identity: no PEM certificate found")
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, blk := range blocks {
		if blk.Type != pemCertificate {
			return nil, fmt.Errorf("identity: PEM block %d is %q, want %q", i, blk.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity: PEM block %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// EncodeKeyPEM returns key as a PKCS#8 "PRIVATE KEY" PEM block, the one key
// format this package reads, whatever the algorithm (ECDSA, ed25519).
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKeyPEM parses exactly one PKCS#8 "PRIVATE KEY" PEM block, as written
// by EncodeKeyPEM.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blocks, err := decodePEM(b)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("identity: key file has %d PEM blocks, want 1", len(blocks))
	}
	return parseKeyBlock(blocks[0])
}

func parseKeyBlock(blk *pem.Block) (crypto.Signer, error) {
	if blk.Type != pemPrivateKey {
		return nil, fmt.Errorf("identity: PEM block is %q, want %q", blk.Type, pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity: parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity: key of type %T cannot sign", k)
	}
	return s, nil
}

// decodePEM returns all PEM blocks of b and fails on anything but whitespace
// around them.
func decodePEM(b []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := b
	for {
		blk, r := pem.Decode(rest)
		if blk == nil {
			break
		}
		blocks = append(blocks, blk)
		rest = r
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("identity: non-PEM data after %d PEM blocks", len(blocks))
	}
	return blocks, nil
}

// keyMatches reports whether key is the private half of pub.
func keyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

// WriteFileAtomic replaces path with data so that a reader (or a crash) sees
// either the old file or the new one, never a torn one: it writes a temporary
// file in the same directory, fsyncs it, sets perm, renames it over path and
// fsyncs the directory. Keys are written with it so that a node renewing its
// SVID at the wrong moment does not lose its identity.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Restrict the mode before any secret is written.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("identity: write %s: sync dir: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("identity: write %s: sync dir: %w", path, err)
	}
	return nil
}

// Credential is an SVID with its key and the trust bundle: what a node keeps
// in its state dir and what the admin CLI uses (admin.pem). Keeping all three
// in one file means a credential is copied, rotated and deleted as one thing.
type Credential struct {
	Certs []*x509.Certificate // the SVID chain, leaf first
	Key   crypto.Signer       // private key of the leaf
	Roots []*x509.Certificate // trust bundle (CA certificates)
}

// Marshal encodes c as one PEM file with this layout, in order:
//
//	CERTIFICATE blocks   the SVID chain, leaf first
//	PRIVATE KEY block    exactly one, PKCS#8
//	CERTIFICATE blocks   the trust bundle roots
//
// The key separates chain from roots, so the file stays readable by standard
// tools (every certificate is a plain CERTIFICATE block) and ParseCredential is
// its exact inverse. The file holds a private key: write it with mode 0600.
func (c *Credential) Marshal() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	key, err := EncodeKeyPEM(c.Key)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(EncodeCertsPEM(c.Certs...))
	buf.Write(key)
	buf.Write(EncodeCertsPEM(c.Roots...))
	return buf.Bytes(), nil
}

// ParseCredential parses the layout written by Credential.Marshal and checks
// that the key belongs to the leaf, so a half-replaced or mixed-up file is
// refused at load time rather than at the first handshake.
func ParseCredential(b []byte) (*Credential, error) {
	blocks, err := decodePEM(b)
	if err != nil {
		return nil, fmt.Errorf("identity: credential: %w", err)
	}
	c := &Credential{}
	for i, blk := range blocks {
		switch blk.Type {
		case pemPrivateKey:
			if c.Key != nil {
				return nil, errors.New("identity: credential: more than one private key")
			}
			if c.Key, err = parseKeyBlock(blk); err != nil {
				return nil, fmt.Errorf("identity: credential: %w", err)
			}
		case pemCertificate:
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("identity: credential: PEM block %d: %w", i, err)
			}
			if c.Key == nil {
				c.Certs = append(c.Certs, cert)
			} else {
				c.Roots = append(c.Roots, cert)
			}
		default:
			return nil, fmt.Errorf("identity: credential: unexpected PEM block %d of type %q", i, blk.Type)
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// check validates the invariants Marshal and ParseCredential share.
func (c *Credential) check() error {
	switch {
	case len(c.Certs) == 0:
		return errors.New("identity: credential: no certificate")
	case c.Key == nil:
		return errors.New("identity: credential: no private key")
	case len(c.Roots) == 0:
		return errors.New("identity: credential: no trust bundle")
	case !keyMatches(c.Key, c.Certs[0].PublicKey):
		return errors.New("identity: credential: private key does not match the leaf certificate")
	}
	return nil
}

// ID returns the SPIFFE ID of the leaf certificate (its one URI SAN).
func (c *Credential) ID() (spiffeid.ID, error) {
	if len(c.Certs) == 0 {
		return spiffeid.ID{}, errors.New("identity: credential: no certificate")
	}
	id, err := x509svid.IDFromCert(c.Certs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: credential: %w", err)
	}
	return id, nil
}

// SVID returns the credential as a go-spiffe SVID, to feed an
// x509svid.Source such as RotatingSVID.
func (c *Credential) SVID() (*x509svid.SVID, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	id, err := c.ID()
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: c.Certs, PrivateKey: c.Key}, nil
}

// TrustBundle returns the roots as the bundle of trust domain td.
func (c *Credential) TrustBundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, c.Roots)
}

// TLSCertificate returns the chain and key as a tls.Certificate, for servers
// that present a fixed certificate (the coordinator).
func (c *Credential) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{PrivateKey: c.Key}
	for _, cert := range c.Certs {
		tc.Certificate = append(tc.Certificate, cert.Raw)
	}
	if len(c.Certs) > 0 {
		tc.Leaf = c.Certs[0]
	}
	return tc
}
