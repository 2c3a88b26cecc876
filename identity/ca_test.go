package identity_test

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/identity"
)

func TestNewCACertificate(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	c := ca.Certificate()
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA cert: IsCA=%v KeyUsage=%v", c.IsCA, c.KeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://mesh.example" {
		t.Errorf("CA URIs = %v", c.URIs)
	}
	if !c.NotBefore.Equal(t0.Add(-time.Minute)) {
		t.Errorf("NotBefore = %v", c.NotBefore)
	}
	if years := c.NotAfter.Sub(c.NotBefore).Hours() / 24 / 365; years < 9.99 || years > 10.01 {
		t.Errorf("validity = %.2f years", years)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if got := ca.Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(c) {
		t.Errorf("Bundle = %v", got)
	}
	if ca.Fingerprint() != identity.FingerprintOf(c) {
		t.Error("Fingerprint differs from FingerprintOf(cert)")
	}
}

func TestCASaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := newCA(t, "mesh.example", t0)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]fs.FileMode{"ca.key": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", file, fi.Mode().Perm(), want)
		}
	}
	loaded, err := identity.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.TrustDomain() != ca.TrustDomain() || loaded.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("loaded CA differs: %s %s", loaded.TrustDomain(), loaded.Fingerprint())
	}
	// The loaded key signs SVIDs that verify under the original bundle.
	cred := issue(t, loaded, nodeID(t, loaded, "n1"), time.Hour, t0)
	if _, err := identity.VerifySVIDAt(cred.Certs, ca.Bundle(), t0); err != nil {
		t.Errorf("SVID from loaded CA: %v", err)
	}
}

func TestLoadCARefusesMismatchedKey(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := newCA(t, "mesh.example", t0).Save(a); err != nil {
		t.Fatal(err)
	}
	if err := newCA(t, "mesh.example", t0).Save(b); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(filepath.Join(b, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "ca.key"), otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = identity.LoadCA(a)
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("LoadCA with another CA's key: %v", err)
	}
}

func TestLoadCAMissingFiles(t *testing.T) {
	_, err := identity.LoadCA(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadCA(empty dir) = %v, want fs.ErrNotExist", err)
	}
	dir := t.TempDir()
	if err := newCA(t, "mesh.example", t0).Save(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "ca.key"))
	if _, err := identity.LoadCA(dir); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "ca.key") {
		t.Fatalf("LoadCA without key = %v", err)
	}
}

func TestFingerprintStringRoundTrip(t *testing.T) {
	fp := newCA(t, "mesh.example", t0).Fingerprint()
	s := fp.String()
	if !strings.HasPrefix(s, "sha256:") || len(s) != 7+64 || strings.ToLower(s) != s {
		t.Fatalf("String = %q", s)
	}
	got, err := identity.ParseFingerprint(s)
	if err != nil || got != fp {
		t.Fatalf("ParseFingerprint(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", s[7:], "sha1:" + s[7:], s[:len(s)-1], s + "0", "sha256:" + strings.ToUpper(s[7:]), "sha256:" + strings.Repeat("g", 64)} {
		if _, err := identity.ParseFingerprint(bad); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", bad)
		}
	}
}

func TestSignSVIDIssuesLeaf(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	id := nodeID(t, ca, "web")
	cred := issue(t, ca, id, 24*time.Hour, t0)
	leaf := cred.Certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Equal(t0.Add(-time.Minute)) || !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v", leaf.SerialNumber)
	}
	other := issue(t, ca, id, 24*time.Hour, t0).Certs[0]
	if other.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two SVIDs share a serial")
	}
	// A TTL beyond the CA's life is capped.
	long := issue(t, ca, id, 100*365*24*time.Hour, t0).Certs[0]
	if !long.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter %v not capped at CA's %v", long.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestSignSVIDRefusesWrongIdentity(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	want := nodeID(t, ca, "web")
	key, _ := identity.GenerateKey()

	csrFor := func(uris ...string) []byte {
		tmpl := &x509.CertificateRequest{}
		for _, u := range uris {
			p, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, p)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for name, csr := range map[string][]byte{
		"another ID":      csrFor("spiffe://mesh.example/node/db"),
		"two URI SANs":    csrFor(want.String(), "spiffe://mesh.example/admin/root"),
		"no URI SAN":      csrFor(),
		"other trust dom": csrFor("spiffe://evil.example/node/web"),
	} {
		_, err := ca.SignSVID(csr, want, time.Hour, t0)
		if !errors.Is(err, identity.ErrCSRIdentity) {
			t.Errorf("%s: err = %v, want ErrCSRIdentity", name, err)
		}
	}
	// The error says what it found.
	_, err := ca.SignSVID(csrFor("spiffe://mesh.example/node/db"), want, time.Hour, t0)
	if err == nil || !strings.Contains(err.Error(), "spiffe://mesh.example/node/db") {
		t.Errorf("error does not name the CSR's ID: %v", err)
	}
}

func TestSignSVIDRefusesBadSignature(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	id := nodeID(t, ca, "web")
	key, _ := identity.GenerateKey()
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a bit in the signature (the last bytes of the DER).
	bad := append([]byte(nil), csr...)
	bad[len(bad)-3] ^= 0x01
	if _, err := ca.SignSVID(bad, id, time.Hour, t0); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("CSR with a broken signature: err = %v", err)
	}
	if _, err := ca.SignSVID(csr, id, time.Hour, t0); err != nil {
		t.Fatalf("intact CSR refused: %v", err)
	}
	if _, err := ca.SignSVID([]byte("not a csr"), id, time.Hour, t0); err == nil {
		t.Fatal("garbage CSR accepted")
	}
}

func TestSignSVIDRefusesForeignIDAndBadTTL(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	foreign, _ := identity.NodeID(mustTD(t, "other.example"), "web")
	key, _ := identity.GenerateKey()
	csr, _ := identity.NewCSR(key, foreign)
	if _, err := ca.SignSVID(csr, foreign, time.Hour, t0); err == nil {
		t.Error("CA signed an ID of another trust domain")
	}
	id := nodeID(t, ca, "web")
	csr, _ = identity.NewCSR(key, id)
	if _, err := ca.SignSVID(csr, id, 0, t0); err == nil {
		t.Error("zero TTL accepted")
	}
	if _, err := ca.SignSVID(csr, id, time.Hour, t0.AddDate(11, 0, 0)); err == nil {
		t.Error("expired CA issued an SVID")
	}
}

func TestIssueServerCert(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	key, _ := identity.GenerateKey()
	id := identity.CoordinatorID(ca.TrustDomain())
	cert, err := ca.IssueServerCert(key.Public(), id, []string{"coord.example"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v", cert.URIs)
	}
	if err := cert.VerifyHostname("coord.example"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	got, err := identity.VerifySVIDAt([]*x509.Certificate{cert}, ca.Bundle(), t0)
	if err != nil || got != id {
		t.Errorf("VerifySVIDAt = %s, %v", got, err)
	}
}
