package identity_test

import (
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestVerifySVIDAcceptsIssuedSVID(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	id := nodeID(t, ca, "web")
	cred := issue(t, ca, id, time.Hour, time.Now())
	got, err := identity.VerifySVID(cred.Certs, ca.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Errorf("ID = %s, want %s", got, id)
	}
}

func TestVerifySVIDRefusesOtherTrustDomainsBundle(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	cred := issue(t, ca, nodeID(t, ca, "web"), time.Hour, t0)
	other := newCA(t, "other.example", t0)
	if _, err := identity.VerifySVIDAt(cred.Certs, other.Bundle(), t0); err == nil {
		t.Error("verified against another trust domain's bundle")
	}
	// Same trust domain name, different CA: the signature decides.
	impostor := newCA(t, "mesh.example", t0)
	if _, err := identity.VerifySVIDAt(cred.Certs, impostor.Bundle(), t0); err == nil {
		t.Error("verified against another CA of the same trust domain name")
	}
	// Both bundles in a set: only the right one counts.
	set := x509bundle.NewSet(other.Bundle(), ca.Bundle())
	if _, err := identity.VerifySVIDAt(cred.Certs, set, t0); err != nil {
		t.Errorf("bundle set: %v", err)
	}
}

func TestVerifySVIDRefusesExpired(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	cred := issue(t, ca, nodeID(t, ca, "web"), time.Hour, t0)
	if _, err := identity.VerifySVIDAt(cred.Certs, ca.Bundle(), t0.Add(59*time.Minute)); err != nil {
		t.Fatalf("valid SVID refused: %v", err)
	}
	if _, err := identity.VerifySVIDAt(cred.Certs, ca.Bundle(), t0.Add(61*time.Minute)); err == nil {
		t.Error("expired SVID accepted")
	}
	// VerifySVID uses the wall clock: an SVID that expired yesterday fails.
	past := time.Now().Add(-48 * time.Hour)
	old := issue(t, newCAAt(t, past), identity.CoordinatorID(mustTD(t, "mesh.example")), time.Hour, past)
	if _, err := identity.VerifySVID(old.Certs, x509bundle.FromX509Authorities(mustTD(t, "mesh.example"), old.Roots)); err == nil {
		t.Error("SVID expired a day ago accepted by VerifySVID")
	}
}

func newCAAt(t *testing.T, now time.Time) *identity.CA {
	return newCA(t, "mesh.example", now)
}

func TestVerifySVIDRefusesCACertAsLeaf(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	if _, err := identity.VerifySVIDAt([]*x509.Certificate{ca.Certificate()}, ca.Bundle(), t0); err == nil {
		t.Error("CA certificate accepted as an SVID")
	}
	if _, err := identity.VerifySVIDAt(nil, ca.Bundle(), t0); err == nil {
		t.Error("empty chain accepted")
	}
}

func TestRotatingSVIDServesLatest(t *testing.T) {
	ca := newCA(t, "mesh.example", t0)
	a, err := issue(t, ca, nodeID(t, ca, "a"), time.Hour, t0).SVID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := issue(t, ca, nodeID(t, ca, "a"), time.Hour, t0).SVID()
	if err != nil {
		t.Fatal(err)
	}
	r := identity.NewRotatingSVID(a)
	var _ x509svid.Source = r
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				if s, err := r.GetX509SVID(); err != nil || (s != a && s != b) {
					t.Errorf("GetX509SVID = %v, %v", s, err)
					return
				}
			}
		})
	}
	r.Set(b)
	wg.Wait()
	if s, _ := r.GetX509SVID(); s != b {
		t.Error("Set did not replace the SVID")
	}
	if _, err := new(identity.RotatingSVID).GetX509SVID(); err == nil {
		t.Error("zero RotatingSVID returned an SVID")
	}
}
