package coordinator

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/tunnel"
)

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.CapVer != api.CapabilityVersion {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("node speaks capability version %d, coordinator speaks %d; upgrade the older one", req.CapVer, api.CapabilityVersion))
		return
	}
	tok, err := identity.ParseToken(req.Token)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if tok.CA != s.ca.Fingerprint() {
		httpError(w, http.StatusForbidden, "join token was made for another coordinator's CA")
		return
	}
	if err := identity.ValidateNodeName(req.Hostname); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := tunnel.ParseKey(req.WireGuardKey); err != nil {
		httpError(w, http.StatusBadRequest, "wireguardKey: "+err.Error())
		return
	}
	id, err := identity.NodeID(s.td, req.Hostname)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ep, err := endpointFor(r, req.Endpoint)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	// Sign first (it only checks the CSR), store second: a CSR for another
	// identity is refused before the token is spent.
	leaf, err := s.ca.SignSVID(req.CSR, id, s.svidTTL, now)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, version, err := s.store.Enroll(r.Context(), store.Enrollment{
		TokenID: tok.ID,
		CheckToken: func(t store.Token) error {
			if !tok.Matches(t.SecretHash) {
				return errTokenSecret
			}
			return nil
		},
		Node:        store.Node{Name: req.Hostname, ID: id.String(), WireGuardKey: req.WireGuardKey, Endpoint: ep},
		AddrFor:     func(seq uint64) (netip.Addr, netip.Addr, error) { return addrFor(s.td, seq) },
		Now:         now,
		IdentityKey: keyOf(leaf),
	})
	if err != nil {
		code, msg := enrollError(err)
		s.log.Info("enrollment refused", "hostname", req.Hostname, "remote", r.RemoteAddr, "err", err)
		httpError(w, code, msg)
		return
	}
	// The key went in with the enrollment itself (Enrollment.IdentityKey).
	if err := s.store.RecordSerial(r.Context(), store.Serial{Serial: serialHex(leaf), Node: n.Name, Expires: leaf.NotAfter}); err != nil {
		s.log.Error("record serial", "node", n.Name, "err", err)
	}
	s.applyLocked(&n, version, store.EventJoin)
	s.log.Info("node enrolled", "node", n.Name, "id", n.ID, "ipv4", n.IPv4, "version", version, "again", n.Created.Before(now))
	writeJSON(w, http.StatusOK, api.EnrollResponse{
		Node:      apiNode(&n, false),
		SVID:      identity.EncodeCertsPEM(leaf),
		Bundle:    identity.EncodeCertsPEM(s.ca.Certificate()),
		NetmapKey: []byte(s.netmapKey.Public().(ed25519.PublicKey)),
	})
}

var errTokenSecret = errors.New("join token secret does not match")

// enrollError maps a store error to what the person enrolling can act on,
// without telling a token-guesser which part was wrong beyond what is safe.
func enrollError(err error) (int, string) {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errTokenSecret):
		return http.StatusForbidden, "join token is not valid for this coordinator; create a new one with `mcpmesh token create`"
	case errors.Is(err, store.ErrTokenExpired):
		return http.StatusForbidden, "join token has expired; create a new one with `mcpmesh token create`"
	case errors.Is(err, store.ErrTokenUsed):
		return http.StatusForbidden, "join token was already used; tokens are single-use unless created with --reusable"
	case errors.Is(err, store.ErrTokenName):
		return http.StatusForbidden, fmt.Sprintf("%v; enroll with the name the token was made for (--hostname)", strings.TrimPrefix(err.Error(), "store: "))
	case errors.Is(err, store.ErrNameTaken):
		return http.StatusConflict, "a node with this name is already enrolled (with another identity key); choose another --hostname"
	case errors.Is(err, store.ErrRevoked):
		return http.StatusForbidden, "a node with this name was revoked and cannot enroll again; choose another --hostname"
	}
	return http.StatusInternalServerError, "enrollment failed: " + err.Error()
}

// endpointFor decides where peers should send WireGuard packets for a node:
// its advertised address, else the source address of this request with the
// node's WireGuard port.
func endpointFor(r *http.Request, info api.EndpointInfo) (netip.AddrPort, error) {
	if info.Advertise != "" {
		ap, err := netip.ParseAddrPort(info.Advertise)
		if err != nil {
			return ap, fmt.Errorf("advertised endpoint %q: %w", info.Advertise, err)
		}
		return ap, nil
	}
	if info.ListenPort == 0 {
		return netip.AddrPort{}, nil
	}
	ip := remoteIP(r)
	if !ip.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("cannot tell the node's address from %q; pass an advertised endpoint", r.RemoteAddr)
	}
	return netip.AddrPortFrom(ip, info.ListenPort), nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// keyOf is the fingerprint of an SVID's public key (SHA-256 of its
// SubjectPublicKeyInfo): the CA signed it only after the CSR's signature
// proved the node holds the private key.
func keyOf(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:]
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var req api.RenewRequest
	if !readJSON(w, r, &req) {
		return
	}
	leaf, err := s.ca.SignSVID(req.CSR, c.id, s.svidTTL, s.now())
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.store.RecordSerial(r.Context(), store.Serial{Serial: serialHex(leaf), Node: c.name, Expires: leaf.NotAfter, Key: keyOf(leaf)}); err != nil {
		httpError(w, http.StatusInternalServerError, "record serial: "+err.Error())
		return
	}
	s.log.Info("svid renewed", "node", c.name, "expires", leaf.NotAfter)
	writeJSON(w, http.StatusOK, api.RenewResponse{
		SVID:   identity.EncodeCertsPEM(leaf),
		Bundle: identity.EncodeCertsPEM(s.ca.Certificate()),
	})
}

func (s *Server) handleEndpoints(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var req api.EndpointInfo
	if !readJSON(w, r, &req) {
		return
	}
	ep, err := endpointFor(r, req)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.mu.nodes[c.name]; cur != nil && cur.Endpoint == ep {
		w.WriteHeader(http.StatusNoContent) // the same again, as on every reconnection
		return
	}
	if ok, wait := s.allowChangeLocked(c.name); !ok {
		tooManyChanges(w, "endpoint", wait)
		return
	}
	version, changed, err := s.store.SetEndpoint(r.Context(), c.name, ep)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if changed {
		n := *s.mu.nodes[c.name]
		n.Endpoint = ep
		s.applyLocked(&n, version, store.EventEndpoint)
	}
	w.WriteHeader(http.StatusNoContent)
}
