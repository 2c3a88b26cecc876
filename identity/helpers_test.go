package identity_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// t0 is the fixed clock of these tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustTD(t testing.TB, name string) spiffeid.TrustDomain {
	t.Helper()
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		t.Fatal(err)
	}
	return td
}

func newCA(t testing.TB, td string, now time.Time) *identity.CA {
	t.Helper()
	ca, err := identity.NewCA(mustTD(t, td), now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue returns a credential for id, signed by ca from a fresh key and CSR,
// with the CA certificate as trust bundle.
func issue(t testing.TB, ca *identity.CA, id spiffeid.ID, ttl time.Duration, now time.Time) *identity.Credential {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignSVID(csr, id, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Credential{Certs: []*x509.Certificate{leaf}, Key: key, Roots: []*x509.Certificate{ca.Certificate()}}
}

func nodeID(t testing.TB, ca *identity.CA, name string) spiffeid.ID {
	t.Helper()
	id, err := identity.NodeID(ca.TrustDomain(), name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
