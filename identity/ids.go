package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Path prefixes of the identities the mesh issues. Node workloads will later
// live under /node/<name>/agent/<agent>.
const (
	nodePrefix      = "/node/"
	adminPrefix     = "/admin/"
	coordinatorPath = "/coordinator"
)

// ValidateNodeName reports whether name can name a node or an admin. Names
// are DNS labels (1..63 characters of [a-z0-9-], not starting or ending with
// '-') so that one name works as a SPIFFE path segment, a hostname in the
// mesh and a policy reference without escaping anywhere.
func ValidateNodeName(name string) error {
	if reason := labelProblem(name); reason != "" {
		return fmt.Errorf("identity: invalid name %q: %s", name, reason)
	}
	return nil
}

// labelProblem says what is wrong with name as a DNS label, or "" if nothing.
func labelProblem(name string) string {
	if name == "" {
		return "empty"
	}
	if len(name) > 63 {
		return "longer than 63 characters"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Sprintf("character %q at %d is not one of [a-z0-9-]", c, i)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return "starts or ends with '-'"
	}
	return ""
}

// NodeID returns spiffe://<td>/node/<name>, the identity a node enrolls with.
// It fails on an invalid name so that no caller can mint an ID that NodeName
// would later refuse.
func NodeID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return namedID(td, nodePrefix, name)
}

// NodeName is the inverse of NodeID: it returns the node name of id, and
// fails unless id's path is exactly /node/<valid name>. Callers use it to turn
// a verified peer identity into a registry key, so anything else (an admin, a
// future workload ID) must not pass as a node.
func NodeName(id spiffeid.ID) (string, error) {
	return nameOf(id, nodePrefix)
}

// AdminID returns spiffe://<td>/admin/<name>, the identity in an admin
// credential (admin.pem). Admin names follow the node name rules.
func AdminID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return namedID(td, adminPrefix, name)
}

// IsAdmin reports whether id is an admin identity (path exactly
// /admin/<valid name>); the coordinator gates its admin API on it. It does not
// check the trust domain: that is the job of SVID verification.
func IsAdmin(id spiffeid.ID) bool {
	_, err := nameOf(id, adminPrefix)
	return err == nil
}

// CoordinatorID returns spiffe://<td>/coordinator, the identity nodes require
// of the server they talk to.
func CoordinatorID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromPath(td, coordinatorPath)
	if err != nil {
		// A constant, valid path cannot fail; a zero trust domain yields a
		// zero ID, which every verification refuses.
		return spiffeid.ID{}
	}
	return id
}

func namedID(td spiffeid.TrustDomain, prefix, name string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("identity: empty trust domain")
	}
	if err := ValidateNodeName(name); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromPath(td, prefix+name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: build ID: %w", err)
	}
	return id, nil
}

func nameOf(id spiffeid.ID, prefix string) (string, error) {
	if id.IsZero() {
		return "", fmt.Errorf("identity: empty SPIFFE ID")
	}
	name, ok := strings.CutPrefix(id.Path(), prefix)
	if !ok {
		return "", fmt.Errorf("identity: %s: path does not start with %s", id, prefix)
	}
	if reason := labelProblem(name); reason != "" {
		return "", fmt.Errorf("identity: %s: invalid name %q: %s", id, name, reason)
	}
	return name, nil
}
