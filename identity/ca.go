package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files of a CA directory.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

const (
	// caValidity is the lifetime of a new CA: long, because rotating the
	// root means re-enrolling every node.
	caValidity = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock is a little behind
	// accepts a certificate issued just now.
	clockSkew = time.Minute
)

// Fingerprint is the SHA-256 of a certificate's DER. Join tokens carry the CA
// fingerprint so that a new node can authenticate the coordinator before it
// has any trust bundle.
type Fingerprint [32]byte

const fingerprintPrefix = "sha256:"

// FingerprintOf returns the fingerprint of cert.
func FingerprintOf(cert *x509.Certificate) Fingerprint {
	return sha256.Sum256(cert.Raw)
}

// String returns "sha256:" followed by 64 lowercase hex digits, the form
// shown to operators and accepted by ParseFingerprint.
func (f Fingerprint) String() string {
	return fingerprintPrefix + hex.EncodeToString(f[:])
}

// ParseFingerprint parses the form written by Fingerprint.String, strictly
// (lowercase hex only), so one fingerprint has one spelling.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	h, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return f, fmt.Errorf("identity: fingerprint %q: missing %q prefix", s, fingerprintPrefix)
	}
	if len(h) != hex.EncodedLen(len(f)) {
		return f, fmt.Errorf("identity: fingerprint %q: want %d hex digits, got %d", s, hex.EncodedLen(len(f)), len(h))
	}
	if strings.ToLower(h) != h {
		return f, fmt.Errorf("identity: fingerprint %q: hex digits must be lowercase", s)
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return Fingerprint{}, fmt.Errorf("identity: fingerprint %q: %w", s, err)
	}
	return f, nil
}

// CA is the trust domain's certificate authority: a self-signed root whose
// only job is to issue X.509-SVIDs to nodes, admins and the coordinator. It is
// immutable after creation and safe for concurrent use.
type CA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a CA for td with a new ECDSA P-256 key: a self-signed CA
// certificate with URI SAN spiffe://<td>, valid for 10 years from now-1m.
// Its path length is 0: it signs leaves only.
func NewCA(td spiffeid.TrustDomain, now time.Time) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("identity: new CA: empty trust domain")
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-clockSkew)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"mcpmesh"}, CommonName: "mcpmesh CA " + td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: new CA: %w", err)
	}
	return &CA{td: td, cert: cert, key: key}, nil
}

// LoadCA reads dir/ca.crt (PEM) and dir/ca.key (PEM PKCS#8), as written by
// Save. It refuses a certificate that is not a CA with a spiffe://<td> URI
// SAN, and a key that does not match the certificate. A missing file yields an
// error matching fs.ErrNotExist, so a caller can decide to create a new CA.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %w", err)
	}
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %s: %w", caCertFile, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("identity: load CA: %s holds %d certificates, want 1", caCertFile, len(certs))
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("identity: load CA: %s is not a CA certificate", caCertFile)
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("identity: load CA: %s has %d URI SANs, want 1 (spiffe://<trust domain>)", caCertFile, len(cert.URIs))
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %s: %w", caCertFile, err)
	}
	if cert.URIs[0].String() != td.IDString() {
		return nil, fmt.Errorf("identity: load CA: %s URI SAN %s is not a bare trust domain ID", caCertFile, cert.URIs[0])
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %s: %w", caKeyFile, err)
	}
	if !keyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("identity: load CA: %s does not match %s", caKeyFile, caCertFile)
	}
	return &CA{td: td, cert: cert, key: key}, nil
}

// Save writes ca.crt (0644) and ca.key (0600) into dir, creating dir with
// mode 0700 if needed. Each file is written atomically; the key is written
// first so that a crash never leaves a certificate without its key.
func (c *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: save CA: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(c.key)
	if err != nil {
		return fmt.Errorf("identity: save CA: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("identity: save CA: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, caCertFile), EncodeCertsPEM(c.cert), 0o644); err != nil {
		return fmt.Errorf("identity: save CA: %w", err)
	}
	return nil
}

// TrustDomain returns the trust domain the CA issues for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Certificate returns the CA certificate. Callers must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Bundle returns a new trust bundle holding the CA certificate, to verify
// SVIDs and to hand to enrolling nodes.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert})
}

// Fingerprint returns the CA certificate's fingerprint, the value join tokens
// carry.
func (c *CA) Fingerprint() Fingerprint { return FingerprintOf(c.cert) }

// SignSVID issues an X.509-SVID for id from a node's DER CSR. The CSR's
// signature must verify (proof the requester holds the key) and its only URI
// SAN must be exactly id, otherwise the error wraps ErrCSRIdentity and says
// what was found; any other SAN in the CSR is ignored, not copied. The leaf
// has URI SAN id, a random 128-bit serial, NotBefore now-1m, NotAfter now+ttl
// capped at the CA's NotAfter, KeyUsage DigitalSignature, ExtKeyUsage
// ClientAuth and ServerAuth, and is not a CA.
func (c *CA) SignSVID(csrDER []byte, id spiffeid.ID, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("identity: sign SVID: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("identity: sign SVID: CSR signature: %w", err)
	}
	switch {
	case len(csr.URIs) == 0:
		return nil, fmt.Errorf("%w: want %s, CSR has no URI SAN", ErrCSRIdentity, id)
	case len(csr.URIs) > 1:
		return nil, fmt.Errorf("%w: want only %s, CSR has %d URI SANs %v", ErrCSRIdentity, id, len(csr.URIs), csr.URIs)
	case csr.URIs[0].String() != id.String():
		return nil, fmt.Errorf("%w: want %s, CSR has %s", ErrCSRIdentity, id, csr.URIs[0])
	}
	return c.issue(csr.PublicKey, id, nil, nil, ttl, now)
}

// IssueServerCert issues the coordinator's TLS certificate for pub: URI SAN
// id plus the given DNS names and IPs, so that nodes can check it as an SVID
// and ordinary clients by hostname. ExtKeyUsage is ServerAuth and ClientAuth.
func (c *CA) IssueServerCert(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	return c.issue(pub, id, dnsNames, ips, ttl, now)
}

// issue signs a leaf for pub; it holds the rules common to every leaf.
func (c *CA) issue(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	switch {
	case pub == nil:
		return nil, errors.New("identity: issue: no public key")
	case id.IsZero():
		return nil, errors.New("identity: issue: empty SPIFFE ID")
	case !id.MemberOf(c.td):
		return nil, fmt.Errorf("identity: issue %s: not in trust domain %s", id, c.td)
	case id.Path() == "":
		return nil, fmt.Errorf("identity: issue %s: an SVID needs a non-empty path", id)
	case ttl <= 0:
		return nil, fmt.Errorf("identity: issue %s: ttl %v is not positive", id, ttl)
	case !now.Before(c.cert.NotAfter):
		return nil, fmt.Errorf("identity: issue %s: CA expired at %v", id, c.cert.NotAfter)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("identity: issue %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: issue %s: %w", id, err)
	}
	return cert, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("identity: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
