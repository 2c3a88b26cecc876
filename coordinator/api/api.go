// Package api holds the wire types of mcpmesh's control API and of the netmap
// stream, shared by the coordinator and the node. It is a leaf: it imports
// only the standard library, so both sides (and any third-party tool) can
// depend on it without pulling in either daemon.
//
// Every change to these types that an old peer could misread bumps
// CapabilityVersion; both sides send theirs and refuse what they cannot speak.
package api

import (
	"net/netip"
	"time"
)

// CapabilityVersion is the version of this wire protocol. A node sends it on
// enrollment and on the netmap stream; the coordinator refuses versions it
// does not know rather than sending maps the node would misapply.
const CapabilityVersion = 1

// Paths of the control API.
const (
	PathEnroll    = "/v1/enroll"
	PathRenew     = "/v1/renew"
	PathNetmap    = "/v1/netmap"
	PathEndpoints = "/v1/endpoints"
	PathServices  = "/v1/services"
	PathAudit     = "/v1/audit"
	PathExposure  = "/v1/exposure"

	PathAdminTokens = "/v1/admin/tokens"
	PathAdminNodes  = "/v1/admin/nodes"
	// PathAdminRevoke is followed by the node's name.
	PathAdminRevoke = "/v1/admin/nodes/revoke/"

	PathAdminPolicy         = "/v1/admin/policy"          // GET ?version=N, POST apply
	PathAdminPolicyCheck    = "/v1/admin/policy/check"    // POST
	PathAdminPolicyHistory  = "/v1/admin/policy/history"  // GET
	PathAdminPolicyRollback = "/v1/admin/policy/rollback" // POST
	PathAdminPolicyExplain  = "/v1/admin/policy/explain"  // POST
	PathAdminServices       = "/v1/admin/services"        // GET
	PathAdminAudit          = "/v1/admin/audit"           // POST query
	PathAdminExposure       = "/v1/admin/exposure"        // GET every node's latest report
)

// MaxRequestBytes bounds every request body the coordinator reads; a larger
// body is refused before it is parsed.
const MaxRequestBytes = 64 << 10

// Error is the body of every non-2xx answer: one line a person can act on.
type Error struct {
	Error string `json:"error"`
}

// EnrollRequest is what a new node sends with its join token.
type EnrollRequest struct {
	CapVer int `json:"capVer"`
	// Token is the join token as printed by `mcpmesh token create`.
	Token string `json:"token"`
	// Hostname becomes the node's name and the last segment of its SPIFFE ID.
	Hostname string `json:"hostname"`
	// WireGuardKey is the node's WireGuard public key (base64).
	WireGuardKey string `json:"wireguardKey"`
	// CSR is a DER certificate request whose only URI SAN is the node's SPIFFE ID.
	CSR []byte `json:"csr"`
	// Endpoint tells peers where this node's WireGuard listens.
	Endpoint EndpointInfo `json:"endpoint"`
}

// EndpointInfo is how a node says where its WireGuard can be reached. When
// Advertise is empty the coordinator pairs the source address it saw on the
// control connection with ListenPort, which is right on a flat network.
type EndpointInfo struct {
	ListenPort uint16 `json:"listenPort"`
	Advertise  string `json:"advertise,omitempty"` // "ip:port"
}

// EnrollResponse hands the node everything it needs to join.
type EnrollResponse struct {
	Node Node `json:"node"`
	// SVID is the PEM chain of the node's X.509-SVID, leaf first.
	SVID []byte `json:"svid"`
	// Bundle is the PEM trust bundle (CA certificates) of the trust domain.
	Bundle []byte `json:"bundle"`
	// NetmapKey is the Ed25519 public key that signs every netmap message.
	NetmapKey []byte `json:"netmapKey"`
}

// RenewRequest asks for a fresh SVID for the same identity (mTLS).
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// RenewResponse carries the new SVID and the current bundle.
type RenewResponse struct {
	SVID   []byte `json:"svid"`
	Bundle []byte `json:"bundle"`
}

// Node is a node record as the control plane knows it.
type Node struct {
	Name         string         `json:"name"`
	ID           string         `json:"id"` // SPIFFE ID
	WireGuardKey string         `json:"wireguardKey"`
	Addresses    []netip.Addr   `json:"addresses"`
	Endpoint     netip.AddrPort `json:"endpoint"`
	Tags         []string       `json:"tags,omitempty"`
	Created      time.Time      `json:"created"`
	LastSeen     time.Time      `json:"lastSeen"`
	Online       bool           `json:"online"`
	Revoked      bool           `json:"revoked,omitempty"`
}

// Peer is a node as another node sees it in its netmap.
type Peer struct {
	Name         string         `json:"name"`
	ID           string         `json:"id"`
	WireGuardKey string         `json:"wireguardKey"`
	Addresses    []netip.Addr   `json:"addresses"`
	Endpoint     netip.AddrPort `json:"endpoint"`
	Tags         []string       `json:"tags,omitempty"`
}

// TokenCreateRequest is an admin's request for a join token.
type TokenCreateRequest struct {
	Tags     []string `json:"tags,omitempty"`
	TTL      Duration `json:"ttl"`
	Reusable bool     `json:"reusable,omitempty"`
	// Name binds the token to one node name (empty: any name).
	Name string `json:"name,omitempty"`
}

// TokenCreateResponse carries the token; it is shown once and stored hashed.
type TokenCreateResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// NodeList is the admin's view of every node.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// Duration is a time.Duration that travels as a Go duration string ("1h").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ServicesRequest is the whole set of services a node publishes.
type ServicesRequest struct {
	Services []ServiceSpec `json:"services"`
}

// ServiceSpec is one service as its node publishes it.
type ServiceSpec struct {
	Name string   `json:"name"`
	Tags []string `json:"tags,omitempty"`
}

// PolicySource is a policy file as the admin wrote it.
type PolicySource struct {
	Filename string `json:"filename"`
	Source   []byte `json:"source"`
}

// PolicyVersion describes one stored policy version.
type PolicyVersion struct {
	Version  uint64    `json:"version"`
	Filename string    `json:"filename"`
	Author   string    `json:"author"`
	Created  time.Time `json:"created"`
	Note     string    `json:"note,omitempty"`
	Source   []byte    `json:"source,omitempty"`
}

// PolicyCheckResponse reports a successful check or apply.
type PolicyCheckResponse struct {
	Version uint64 `json:"version,omitempty"` // set by apply
	Grants  int    `json:"grants"`
	Tests   int    `json:"tests"`
	// Warnings, from apply: what the new policy leaves without effect,
	// such as a published service's tag that tagOwners does not let its
	// node use.
	Warnings []string `json:"warnings,omitempty"`
}

// PolicyErrors is the body of a 422 answer to check or apply: every error
// with its position, so the CLI can print them as FILE:LINE:COL: message.
type PolicyErrors struct {
	Error  string        `json:"error"`
	Errors []PolicyError `json:"errors"`
}

// PolicyError is one error in a policy file.
type PolicyError struct {
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Msg  string `json:"msg"`
}

// RollbackRequest asks to apply an old version again.
type RollbackRequest struct {
	Version uint64 `json:"version"`
}

// ExplainRequest asks how the current policy decides one call.
type ExplainRequest struct {
	Src  string         `json:"src"`            // node:NAME or a SPIFFE ID
	Dst  string         `json:"dst"`            // svc:NAME
	Kind string         `json:"kind,omitempty"` // tool (default), resource or prompt
	Name string         `json:"name"`
	Args map[string]any `json:"args,omitempty"`
}

// ExplainResponse is the decision and the rule that made it.
type ExplainResponse struct {
	Allow         bool   `json:"allow"`
	Explanation   string `json:"explanation"`
	PolicyVersion uint64 `json:"policyVersion"`
}

// ServiceList is the admin's view of published services.
type ServiceList struct {
	Services []Service `json:"services"`
}

// AuditEvent is one decision of a serving node's MCP proxy. It never holds
// the call's arguments, only their digest, so the audit trail of a PHI
// service does not itself become PHI.
type AuditEvent struct {
	// Seq is the node's sequence number for the event, so shipping to the
	// coordinator can resume after an outage without loss or duplicates.
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`   // the serving node
	Caller    string    `json:"caller"` // the caller's SPIFFE ID
	Service   string    `json:"service"`
	Method    string    `json:"method"`         // JSON-RPC method, e.g. tools/call
	Tool      string    `json:"tool,omitempty"` // tool name, resource URI or prompt name
	Decision  string    `json:"decision"`       // "allow" or "deny"
	Reason    string    `json:"reason"`         // the rule that decided, e.g. "grant at acl.hujson:12:5"
	Policy    uint64    `json:"policy"`         // policy version that decided
	LatencyUS int64     `json:"latencyUs"`      // time from the request to its decision, in microseconds (recorded before the call is forwarded)
	// ArgsDigest is "hmac-sha256:<hex>" of the canonical JSON of the
	// arguments, keyed by the serving node (mcp.ArgsDigest), so the trail
	// gives no guessable argument away to whoever reads it.
	ArgsDigest string `json:"argsDigest,omitempty"`
	Session    string `json:"session,omitempty"` // MCP session id, if any
	// Received is when the coordinator stored the event, by its own clock
	// (Time is the node's); set in the coordinator's answers only.
	Received time.Time `json:"received,omitzero"`
	// Variant tells apart the events a node sent under one Seq: a node
	// restored from a snapshot numbers its next events from the
	// snapshot's. 0 for the first; set in the coordinator's answers only.
	Variant int `json:"variant,omitempty"`
}

// AuditBatch is what a node ships: events in Seq order.
type AuditBatch struct {
	Events []AuditEvent `json:"events"`
}

// AuditAck tells the node the highest Seq of its batch: the coordinator
// holds every event of the batch.
type AuditAck struct {
	Stored uint64 `json:"stored"`
}

// ExposureReport is one node's scan for MCP servers on its host that can be
// reached off the mesh (`mcpmesh audit exposure`). The coordinator keeps
// the latest per node; the node name comes from the SVID of the sender.
type ExposureReport struct {
	Node      string            `json:"node,omitempty"`
	ScannedAt time.Time         `json:"scanned_at"`
	Findings  []ExposureFinding `json:"findings"`
	// Error says why a scan was incomplete (e.g. another OS); findings
	// are then what could be found.
	Error string `json:"error,omitempty"`
}

// MaxExposureFindings bounds one report.
const MaxExposureFindings = 1000

// ExposureFinding is one listening socket that answered an MCP initialize
// on a non-loopback address.
type ExposureFinding struct {
	Address         string `json:"address"` // as bound, e.g. 0.0.0.0:9000
	PID             int    `json:"pid,omitempty"`
	Process         string `json:"process,omitempty"`
	Transport       string `json:"transport"` // streamable-http or sse
	URL             string `json:"url"`
	ServerName      string `json:"server_name,omitempty"`
	ServerVersion   string `json:"server_version,omitempty"`
	ProtocolVersion string `json:"protocol_version,omitempty"`
	// Service is the mesh service this node serves from the same port,
	// "" when the server is not served through the mesh.
	Service string `json:"service,omitempty"`
	// LockedDown is true when the port accepts packets from loopback only
	// and the node verified that rule is installed.
	LockedDown bool `json:"locked_down"`
}

// Exposed says whether the finding is reachable off the mesh.
func (f ExposureFinding) Exposed() bool { return !f.LockedDown }

// AuditQuery filters `mcpmesh audit tail`.
type AuditQuery struct {
	Caller   string `json:"caller,omitempty"`
	Service  string `json:"service,omitempty"`
	Tool     string `json:"tool,omitempty"`
	Decision string `json:"decision,omitempty"`
	Limit    int    `json:"limit,omitempty"`
}
