// Package identity owns who is who in an mcpmesh trust domain: SPIFFE IDs for
// nodes, admins and the coordinator, the trust-domain CA that issues
// X.509-SVIDs, verification of those SVIDs (with go-spiffe v2), the TLS
// configurations built on them, join tokens, and the key and credential files
// a node or an admin keeps on disk.
//
// It is the single place where identity is decided, so that every other
// package handles identities as value types (spiffeid.ID) and never parses
// certificates itself. It must not know about HTTP handlers, WireGuard, the
// coordinator's registry or policy: callers get IDs and certificates and
// decide what they mean.
//
// Functions that depend on the clock take now time.Time, so expiry and
// renewal can be tested with a fake clock; there are no package globals.
package identity
