package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ServerTLSConfig returns the coordinator's TLS config. One listener serves
// both enrollment (the node has no certificate yet) and the mTLS endpoints, so
// a client certificate is requested but not required; when the client does
// send one it must verify against bundles (go-spiffe), otherwise the handshake
// fails. The check runs in VerifyConnection, which Go also calls on resumed
// sessions. Handlers then call PeerID: ErrNoPeerCertificate means
// "enrollment only". TLS 1.3 minimum.
func ServerTLSConfig(cert tls.Certificate, bundles x509bundle.Source) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			if _, err := VerifySVID(cs.PeerCertificates, bundles); err != nil {
				return fmt.Errorf("identity: client certificate refused: %w", err)
			}
			return nil
		},
	}
}

// PeerLeaf returns the client leaf certificate of a connection served with
// ServerTLSConfig, for checks beyond identity (serial against a revocation
// list, expiry for renewal). It returns an error wrapping ErrNoPeerCertificate
// when the client sent none. It relies on the handshake having verified the
// chain, which ServerTLSConfig guarantees; do not use it on connections whose
// config does not verify client certificates.
func PeerLeaf(state *tls.ConnectionState) (*x509.Certificate, error) {
	if state == nil || !state.HandshakeComplete {
		return nil, fmt.Errorf("%w: handshake not complete", ErrNoPeerCertificate)
	}
	if len(state.PeerCertificates) == 0 {
		return nil, ErrNoPeerCertificate
	}
	return state.PeerCertificates[0], nil
}

// PeerID returns the SPIFFE ID of the verified client certificate of a
// connection served with ServerTLSConfig, or an error wrapping
// ErrNoPeerCertificate when the client sent none. Same trust contract as
// PeerLeaf.
func PeerID(state *tls.ConnectionState) (spiffeid.ID, error) {
	leaf, err := PeerLeaf(state)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: peer certificate: %w", err)
	}
	return id, nil
}

// ClientTLSConfig returns an mTLS client config that presents svid (read at
// every handshake, so a RotatingSVID renews without a new config) and accepts
// only a server whose SVID verifies under bundles and is exactly serverID.
// Hostnames are not checked: the SPIFFE ID is the server's name. TLS 1.3
// minimum.
func ClientTLSConfig(svid x509svid.Source, bundles x509bundle.Source, serverID spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(svid, bundles, tlsconfig.AuthorizeID(serverID))
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// BootstrapTLSConfig is the client config for first contact, when a node
// holds only a join token. The server's presented chain must contain a CA
// certificate whose Fingerprint equals caFP (from the token); the server leaf
// must verify against that CA and carry the coordinator ID of the CA's trust
// domain. This authenticates the coordinator without trust on first use.
// Anything else fails the handshake; when no presented certificate matches
// caFP the error wraps ErrCAMismatch. TLS 1.3 minimum.
func BootstrapTLSConfig(caFP Fingerprint) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Go's verification is replaced, not skipped: VerifyConnection
		// below checks the chain against the pinned CA.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyBootstrapServer(cs.PeerCertificates, caFP)
		},
	}
}

func verifyBootstrapServer(chain []*x509.Certificate, caFP Fingerprint) error {
	if len(chain) == 0 {
		return errors.New("identity: bootstrap: server presented no certificate")
	}
	var ca *x509.Certificate
	for _, c := range chain {
		if FingerprintOf(c) == caFP {
			ca = c
			break
		}
	}
	if ca == nil {
		return fmt.Errorf("%w: none of the %d presented certificates has fingerprint %s", ErrCAMismatch, len(chain), caFP)
	}
	if !ca.IsCA {
		return fmt.Errorf("identity: bootstrap: certificate with fingerprint %s is not a CA", caFP)
	}
	if len(ca.URIs) != 1 {
		return fmt.Errorf("identity: bootstrap: CA has %d URI SANs, want 1", len(ca.URIs))
	}
	td, err := spiffeid.TrustDomainFromURI(ca.URIs[0])
	if err != nil {
		return fmt.Errorf("identity: bootstrap: CA URI SAN: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca})
	id, err := VerifySVID(chain, bundle)
	if err != nil {
		return fmt.Errorf("identity: bootstrap: server certificate: %w", err)
	}
	if want := CoordinatorID(td); id != want {
		return fmt.Errorf("identity: bootstrap: server is %s, want %s", id, want)
	}
	return nil
}
