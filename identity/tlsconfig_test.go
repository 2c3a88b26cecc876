package identity_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// coordinatorCert issues the coordinator's certificate and returns it as a
// tls.Certificate whose chain includes the CA (as the coordinator serves it).
func coordinatorCert(t *testing.T, ca *identity.CA, id spiffeid.ID) tls.Certificate {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServerCert(key.Public(), id, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cred := &identity.Credential{Certs: []*x509.Certificate{leaf, ca.Certificate()}, Key: key, Roots: []*x509.Certificate{ca.Certificate()}}
	return cred.TLSCertificate()
}

// serverResult is what the server side of one connection saw.
type serverResult struct {
	handshakeErr error
	peerID       spiffeid.ID
	peerErr      error
}

// serveOnce listens on loopback, accepts one connection with cfg, completes
// the handshake, answers "ok" and reports what it saw. The listener is
// closed when the test ends.
func serveOnce(t *testing.T, cfg *tls.Config) (addr string, result <-chan serverResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan serverResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ch <- serverResult{handshakeErr: err}
			return
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		conn := tls.Server(raw, cfg)
		if err := conn.Handshake(); err != nil {
			ch <- serverResult{handshakeErr: err}
			return
		}
		st := conn.ConnectionState()
		id, perr := identity.PeerID(&st)
		conn.Write([]byte("ok"))
		ch <- serverResult{peerID: id, peerErr: perr}
	}()
	return ln.Addr().String(), ch
}

// dial connects with cfg and reads the server's "ok". It returns the first
// error: in TLS 1.3 a server's refusal of the client certificate shows up on
// the client's first read, not in its handshake.
func dial(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		return err
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "ok" {
		return errors.New("unexpected reply " + string(buf))
	}
	return nil
}

func result(t *testing.T, ch <-chan serverResult) serverResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("server did not finish")
		return serverResult{}
	}
}

func TestMTLSHandshakeReturnsNodeID(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	coordID := identity.CoordinatorID(ca.TrustDomain())
	addr, res := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, coordID), ca.Bundle()))

	node := nodeID(t, ca, "web")
	svid, err := issue(t, ca, node, time.Hour, time.Now()).SVID()
	if err != nil {
		t.Fatal(err)
	}
	cfg := identity.ClientTLSConfig(identity.NewRotatingSVID(svid), ca.Bundle(), coordID)
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("client MinVersion = %x", cfg.MinVersion)
	}
	if err := dial(t, addr, cfg); err != nil {
		t.Fatalf("client: %v", err)
	}
	r := result(t, res)
	if r.handshakeErr != nil || r.peerErr != nil {
		t.Fatalf("server: %v / %v", r.handshakeErr, r.peerErr)
	}
	if r.peerID != node {
		t.Errorf("PeerID = %s, want %s", r.peerID, node)
	}
}

func TestMTLSClientRefusesServerWithWrongID(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	// The server presents a node's SVID, not the coordinator's.
	addr, _ := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, nodeID(t, ca, "evil")), ca.Bundle()))
	svid, _ := issue(t, ca, nodeID(t, ca, "web"), time.Hour, time.Now()).SVID()
	cfg := identity.ClientTLSConfig(svid, ca.Bundle(), identity.CoordinatorID(ca.TrustDomain()))
	if err := dial(t, addr, cfg); err == nil {
		t.Fatal("client accepted a server with the wrong SPIFFE ID")
	}
}

func TestMTLSHandshakeRefusesForeignClientCert(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	coordID := identity.CoordinatorID(ca.TrustDomain())
	addr, res := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, coordID), ca.Bundle()))

	// Same trust domain name and node name, but signed by another CA.
	foreign := newCA(t, "mesh.example", time.Now())
	svid, _ := issue(t, foreign, nodeID(t, foreign, "web"), time.Hour, time.Now()).SVID()
	cfg := identity.ClientTLSConfig(svid, ca.Bundle(), coordID)
	if err := dial(t, addr, cfg); err == nil {
		t.Error("client with a foreign certificate got a reply")
	}
	r := result(t, res)
	if r.handshakeErr == nil {
		t.Fatalf("server accepted a foreign client certificate as %s", r.peerID)
	}
}

func TestClientWithoutCertConnectsWithoutPeerID(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	coordID := identity.CoordinatorID(ca.TrustDomain())
	addr, res := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, coordID), ca.Bundle()))

	cfg := tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(coordID))
	if err := dial(t, addr, cfg); err != nil {
		t.Fatalf("client: %v", err)
	}
	r := result(t, res)
	if r.handshakeErr != nil {
		t.Fatalf("server: %v", r.handshakeErr)
	}
	if !errors.Is(r.peerErr, identity.ErrNoPeerCertificate) {
		t.Errorf("PeerID err = %v, want ErrNoPeerCertificate", r.peerErr)
	}
}

func TestBootstrapTLSConfigAcceptsPinnedCA(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	coordID := identity.CoordinatorID(ca.TrustDomain())
	addr, res := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, coordID), ca.Bundle()))
	if err := dial(t, addr, identity.BootstrapTLSConfig(ca.Fingerprint())); err != nil {
		t.Fatalf("bootstrap with the right fingerprint: %v", err)
	}
	if r := result(t, res); !errors.Is(r.peerErr, identity.ErrNoPeerCertificate) {
		t.Errorf("server saw %v / %v", r.handshakeErr, r.peerErr)
	}
}

func TestBootstrapTLSConfigRefusesWrongFingerprint(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	coordID := identity.CoordinatorID(ca.TrustDomain())
	addr, _ := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, coordID), ca.Bundle()))
	other := newCA(t, "mesh.example", time.Now())
	err := dial(t, addr, identity.BootstrapTLSConfig(other.Fingerprint()))
	if !errors.Is(err, identity.ErrCAMismatch) {
		t.Fatalf("bootstrap with a wrong fingerprint: err = %v, want ErrCAMismatch", err)
	}
}

func TestBootstrapTLSConfigRefusesNonCoordinator(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	// Right CA, but the server is a node, not the coordinator.
	addr, _ := serveOnce(t, identity.ServerTLSConfig(coordinatorCert(t, ca, nodeID(t, ca, "evil")), ca.Bundle()))
	err := dial(t, addr, identity.BootstrapTLSConfig(ca.Fingerprint()))
	if err == nil || errors.Is(err, identity.ErrCAMismatch) {
		t.Fatalf("bootstrap to a non-coordinator: err = %v", err)
	}
}

func TestBootstrapTLSConfigRefusesLeafNotSignedByPinnedCA(t *testing.T) {
	ca := newCA(t, "mesh.example", time.Now())
	rogue := newCA(t, "mesh.example", time.Now())
	// The server shows the pinned CA certificate but its leaf comes from a
	// rogue CA: matching the fingerprint alone must not be enough.
	tc := coordinatorCert(t, rogue, identity.CoordinatorID(rogue.TrustDomain()))
	tc.Certificate = [][]byte{tc.Certificate[0], ca.Certificate().Raw}
	addr, _ := serveOnce(t, identity.ServerTLSConfig(tc, ca.Bundle()))
	err := dial(t, addr, identity.BootstrapTLSConfig(ca.Fingerprint()))
	if err == nil || errors.Is(err, identity.ErrCAMismatch) {
		t.Fatalf("bootstrap to a rogue leaf: err = %v", err)
	}
}

func TestPeerIDWithoutHandshake(t *testing.T) {
	if _, err := identity.PeerID(nil); !errors.Is(err, identity.ErrNoPeerCertificate) {
		t.Errorf("PeerID(nil) = %v", err)
	}
	if _, err := identity.PeerLeaf(&tls.ConnectionState{}); !errors.Is(err, identity.ErrNoPeerCertificate) {
		t.Errorf("PeerLeaf(incomplete) = %v", err)
	}
}
