// Package store persists the coordinator's state: join tokens, the node
// registry, issued SVID serials and the netmap change log. The coordinator
// depends on the Store interface; SQLite (modernc.org/sqlite, pure Go) is the
// embedded default and PostgreSQL can later satisfy the same interface for a
// highly available control plane.
//
// Every method that changes what nodes see appends to the change log in the
// same transaction, so the netmap version and the data can never disagree,
// even after a kill -9 mid-write.
package store

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// Sentinel errors the coordinator turns into clear answers.
var (
	ErrNotFound     = errors.New("store: not found")
	ErrTokenUsed    = errors.New("store: join token was already used")
	ErrTokenExpired = errors.New("store: join token has expired")
	ErrNameTaken    = errors.New("store: node name is already enrolled")
	ErrRevoked      = errors.New("store: node is revoked")
	ErrTokenName    = errors.New("store: join token is for another node name")
)

// Token is a join token as stored: the secret only as its SHA-256.
type Token struct {
	ID         string
	SecretHash []byte
	Tags       []string
	Reusable   bool
	Created    time.Time
	Expires    time.Time
	Uses       int
	// Name, when set, is the only node name the token enrolls: a token
	// handed to one machine cannot claim a name the policy grants to
	// another that has not enrolled yet.
	Name string
}

// Node is one enrolled node.
type Node struct {
	Name         string
	ID           string // SPIFFE ID
	WireGuardKey string
	IPv4         netip.Addr
	IPv6         netip.Addr
	Endpoint     netip.AddrPort
	Tags         []string
	Created      time.Time
	LastSeen     time.Time
	RevokedAt    time.Time // zero while the node is in good standing
}

// Revoked reports whether the node has been revoked.
func (n *Node) Revoked() bool { return !n.RevokedAt.IsZero() }

// Event is one entry of the netmap change log: the node whose record changed
// at Version. Consumers read the node's current record, so the log stays
// small and a node that reconnects gets one update per changed peer.
type Event struct {
	Version uint64
	Node    string
	Kind    string
}

// Event kinds.
const (
	EventJoin     = "join"
	EventRevoke   = "revoke"
	EventEndpoint = "endpoint"
	EventServices = "services"
	// EventPolicy has no node: it changes what every node may see.
	EventPolicy = "policy"
)

// PolicyVersion is one applied policy. Versions are never edited; a
// rollback applies an old source again as a new version.
type PolicyVersion struct {
	Version  uint64
	Source   []byte
	Filename string
	Author   string // the admin's SPIFFE ID
	Created  time.Time
	Note     string // e.g. "rollback to v3"
}

// Service is an MCP service published by a node.
type Service struct {
	Name string
	Node string
	Tags []string
}

// Serial is an issued SVID serial, kept so a revocation can publish every
// still-valid certificate of the node.
type Serial struct {
	Serial  string // hex
	Node    string
	Expires time.Time
	// Key is the SHA-256 of the SVID's SubjectPublicKeyInfo: the latest
	// one is the key with which the node may enroll again (Enrollment).
	Key []byte
}

// Enrollment is everything the store needs to enroll a node atomically.
type Enrollment struct {
	TokenID string
	// CheckToken verifies the token's secret (constant time); the store
	// itself does no cryptography.
	CheckToken func(Token) error
	Node       Node // IPv4/IPv6/Created are filled in by the store
	// AddrFor maps the allocation sequence number to the node's addresses.
	AddrFor func(seq uint64) (netip.Addr, netip.Addr, error)
	Now     time.Time
	// IdentityKey is the SHA-256 of the SubjectPublicKeyInfo in the CSR
	// (whose signature proves the node holds the key). When a node of the
	// same name exists, is not revoked and its latest SVID was for this
	// key, it is that node enrolling again after its SVID expired: it
	// keeps its record (addresses, tags) and gets its new WireGuard key
	// and endpoint. Any other name clash is ErrNameTaken.
	IdentityKey []byte
}

// Store is the coordinator's persistence. Implementations are safe for
// concurrent use.
type Store interface {
	// CreateToken stores a new join token.
	CreateToken(ctx context.Context, t Token) error
	// Enroll consumes the token (unless reusable), allocates addresses,
	// inserts the node (or renews the record of the same node enrolling
	// again, see Enrollment.IdentityKey) and logs the join in one
	// transaction. Nothing changes when it fails.
	Enroll(ctx context.Context, e Enrollment) (Node, uint64, error)
	// Node returns one node by name.
	Node(ctx context.Context, name string) (Node, error)
	// Nodes returns every node, revoked ones included.
	Nodes(ctx context.Context) ([]Node, error)
	// SetEndpoint records where a node's WireGuard listens; it logs an event
	// only when the endpoint changed.
	SetEndpoint(ctx context.Context, name string, ep netip.AddrPort) (version uint64, changed bool, err error)
	// TouchLastSeen records that a node was connected at t. It is not an event.
	TouchLastSeen(ctx context.Context, name string, t time.Time) error
	// Revoke marks the node revoked, releases the names of the services it
	// published (another node may publish them next) and logs it, in one
	// transaction; it returns the node's serials that have not expired by
	// now.
	Revoke(ctx context.Context, name string, now time.Time) (uint64, []Serial, error)
	// RecordSerial remembers an issued SVID serial.
	RecordSerial(ctx context.Context, s Serial) error
	// RevokedSerials lists serials of revoked nodes that are still valid at now.
	RevokedSerials(ctx context.Context, now time.Time) ([]string, error)
	// Version is the newest logged version (0 on an empty log).
	Version(ctx context.Context) (uint64, error)
	// EventsSince returns the events after version v, oldest first, and
	// ok=false when the log no longer reaches back to v.
	EventsSince(ctx context.Context, v uint64) (events []Event, ok bool, err error)
	// AddPolicy stores a new policy version and logs it as an event.
	AddPolicy(ctx context.Context, p PolicyVersion) (policyVersion, netmapVersion uint64, err error)
	// Policy returns one version, or the latest when version is 0
	// (ErrNotFound when none was ever applied).
	Policy(ctx context.Context, version uint64) (PolicyVersion, error)
	// PolicyHistory lists every version, newest first, without sources.
	PolicyHistory(ctx context.Context) ([]PolicyVersion, error)
	// SetServices replaces the services a node publishes; it logs an event
	// only when they changed. A name published by another node is refused.
	SetServices(ctx context.Context, node string, svcs []Service) (version uint64, changed bool, err error)
	// Services lists every published service.
	Services(ctx context.Context) ([]Service, error)
	// AppendAudit stores a node's audit events, ignoring those it already
	// has (same sequence, same content). An event that reuses a sequence
	// with other content is stored too, as another variant: a node
	// restored from a snapshot numbers its next events from the
	// snapshot's, and none of them may be lost as a duplicate. received
	// is the coordinator's time: retention counts from it, because an
	// event's own time is the node's clock, which may be wrong by years.
	AppendAudit(ctx context.Context, node string, received time.Time, evs []api.AuditEvent) (AuditAppend, error)
	// Audit returns the newest events matching q, newest first.
	Audit(ctx context.Context, q api.AuditQuery) ([]api.AuditEvent, error)
	// PruneAudit deletes the events received before before (AppendAudit's
	// received, not the event's own time) and returns how many it
	// deleted.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
	// SetExposure replaces a node's exposure report.
	SetExposure(ctx context.Context, r api.ExposureReport) error
	// Exposure returns every node's latest exposure report, by node name.
	Exposure(ctx context.Context) ([]api.ExposureReport, error)
	// Close releases the database.
	Close() error
}

// AuditAppend is what AppendAudit did with a batch.
type AuditAppend struct {
	// Stored is the highest sequence of the batch: every event of it is
	// stored once AppendAudit returns without error.
	Stored uint64
	// Reused counts the events stored under a sequence the node had
	// already sent with other content.
	Reused int
}

// ErrServiceTaken is returned when a service name is published by another node.
var ErrServiceTaken = errors.New("store: service name is published by another node")
