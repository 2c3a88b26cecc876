package identity_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/identity"
)

func TestWriteFileAtomicReplacesContentAndSetsPerm(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "node.pem")
	if err := os.WriteFile(p, []byte("old content, longer than the new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := identity.WriteFileAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new" {
		t.Fatalf("content = %q, %v", got, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if err := identity.WriteFileAtomic(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	ec, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		enc func() ([]byte, error)
		pub any
	}{
		"ecdsa":   {func() ([]byte, error) { return identity.EncodeKeyPEM(ec) }, ec.Public()},
		"ed25519": {func() ([]byte, error) { return identity.EncodeKeyPEM(ed) }, ed.Public()},
	} {
		b, err := tc.enc()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
			t.Errorf("%s: not a PKCS#8 PEM: %s", name, b)
		}
		k, err := identity.ParseKeyPEM(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.pub) {
			t.Errorf("%s: parsed key differs", name)
		}
	}
	if _, err := identity.ParseKeyPEM([]byte("nope")); err == nil {
		t.Error("garbage key accepted")
	}
}

func TestParseCertsPEMIsStrict(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	good := identity.EncodeCertsPEM(ca.Certificate(), ca.Certificate())
	certs, err := identity.ParseCertsPEM(good)
	if err != nil || len(certs) != 2 {
		t.Fatalf("ParseCertsPEM = %d certs, %v", len(certs), err)
	}
	key, _ := identity.GenerateKey()
	keyPEM, _ := identity.EncodeKeyPEM(key)
	for name, b := range map[string][]byte{
		"empty":          nil,
		"key block":      append(append([]byte{}, good...), keyPEM...),
		"trailing bytes": append(append([]byte{}, good...), "junk"...),
		"bad DER":        []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	} {
		if _, err := identity.ParseCertsPEM(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCredentialRoundTrip(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	id := nodeID(t, ca, "web")
	cred := issue(t, ca, id, time.Hour, t0)
	b, err := cred.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.ParseCredential(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Certs) != 1 || !got.Certs[0].Equal(cred.Certs[0]) || len(got.Roots) != 1 || !got.Roots[0].Equal(ca.Certificate()) {
		t.Fatalf("round trip changed certificates")
	}
	again, _ := got.Marshal()
	if !bytes.Equal(again, b) {
		t.Error("Marshal(Parse(b)) != b")
	}
	if gotID, err := got.ID(); err != nil || gotID != id {
		t.Errorf("ID = %s, %v", gotID, err)
	}
	svid, err := got.SVID()
	if err != nil || svid.ID != id {
		t.Fatalf("SVID = %v, %v", svid, err)
	}
	if _, err := identity.VerifySVIDAt(svid.Certificates, got.TrustBundle(ca.TrustDomain()), t0); err != nil {
		t.Errorf("credential does not verify against its own bundle: %v", err)
	}
	tc := got.TLSCertificate()
	if len(tc.Certificate) != 1 || tc.Leaf == nil || tc.PrivateKey == nil {
		t.Errorf("TLSCertificate = %+v", tc)
	}
}

func TestParseCredentialRefusesBadFiles(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	cred := issue(t, ca, nodeID(t, ca, "web"), time.Hour, t0)
	other := issue(t, ca, nodeID(t, ca, "db"), time.Hour, t0)
	leaf := identity.EncodeCertsPEM(cred.Certs...)
	roots := identity.EncodeCertsPEM(ca.Certificate())
	key, _ := identity.EncodeKeyPEM(cred.Key)
	otherKey, _ := identity.EncodeKeyPEM(other.Key)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for name, b := range map[string][]byte{
		"no key":        cat(leaf, roots),
		"no leaf":       cat(key, roots),
		"no roots":      cat(leaf, key),
		"two keys":      cat(leaf, key, key, roots),
		"wrong key":     cat(leaf, otherKey, roots),
		"trailing junk": cat(leaf, key, roots, []byte("x")),
		"foreign block": cat(leaf, key, roots, []byte("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n")),
	} {
		_, err := identity.ParseCredential(b)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "identity: ") {
			t.Errorf("%s: error without prefix: %v", name, err)
		}
	}
	if _, err := identity.ParseCredential(cat(leaf, key, roots)); err != nil {
		t.Errorf("well-formed file refused: %v", err)
	}
}
