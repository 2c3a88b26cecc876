package identity

import "errors"

// Sentinel errors, exported only where a caller acts on them. They are always
// wrapped with context, so test them with errors.Is.
var (
	// ErrMalformedToken means a join token string could not be parsed. The
	// CLI and the enrollment endpoint answer it with "check the token you
	// pasted" rather than "the token was refused".
	ErrMalformedToken = errors.New("identity: malformed join token")

	// ErrCSRIdentity means a CSR asked for an identity other than the one
	// the CA was told to issue. The coordinator answers it as a client error
	// (the node sent a bad request), not as an internal failure.
	ErrCSRIdentity = errors.New("identity: CSR does not carry the expected SPIFFE ID")

	// ErrCAMismatch means the server presented no certificate whose
	// fingerprint equals the CA fingerprint from the join token: either the
	// token is for another mesh or someone is in the middle. The node stops
	// enrolling instead of retrying.
	ErrCAMismatch = errors.New("identity: server does not present the CA named by the join token")

	// ErrNoPeerCertificate means a TLS connection carries no client
	// certificate, which on the coordinator's shared listener is normal for
	// enrollment and a reason to answer 401 on the mTLS endpoints.
	ErrNoPeerCertificate = errors.New("identity: connection has no peer certificate")
)
