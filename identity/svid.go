package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// RotatingSVID is an x509svid.Source whose SVID can be replaced at any time
// (renewal) without rebuilding the TLS configs that read it: every new
// handshake picks up the current SVID. It is safe for concurrent use. The
// zero value holds no SVID and GetX509SVID fails on it; use NewRotatingSVID.
type RotatingSVID struct {
	cur atomic.Pointer[x509svid.SVID]
}

var _ x509svid.Source = (*RotatingSVID)(nil)

// NewRotatingSVID returns a source that serves s until the next Set.
func NewRotatingSVID(s *x509svid.SVID) *RotatingSVID {
	r := &RotatingSVID{}
	r.cur.Store(s)
	return r
}

// Set replaces the SVID served to handshakes that start from now on;
// connections already established keep the one they used.
func (r *RotatingSVID) Set(s *x509svid.SVID) {
	r.cur.Store(s)
}

// GetX509SVID returns the current SVID. It implements x509svid.Source.
func (r *RotatingSVID) GetX509SVID() (*x509svid.SVID, error) {
	s := r.cur.Load()
	if s == nil {
		return nil, errors.New("identity: rotating SVID: no SVID set")
	}
	return s, nil
}

// VerifySVID verifies a peer chain (leaf first) against bundles at the
// current time with go-spiffe (x509svid.Verify) and returns the SPIFFE ID of
// the leaf. Authorization (which IDs may do what) is the caller's job.
func VerifySVID(chain []*x509.Certificate, bundles x509bundle.Source) (spiffeid.ID, error) {
	return VerifySVIDAt(chain, bundles, time.Now())
}

// VerifySVIDAt is VerifySVID at the given time, for callers that run on an
// injected clock (renewal logic, tests of expiry).
func VerifySVIDAt(chain []*x509.Certificate, bundles x509bundle.Source, now time.Time) (spiffeid.ID, error) {
	if bundles == nil {
		return spiffeid.ID{}, errors.New("identity: verify SVID: no trust bundle")
	}
	id, _, err := x509svid.Verify(chain, bundles, x509svid.WithTime(now))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: verify SVID: %w", err)
	}
	return id, nil
}
