package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxNetmapMessageBytes bounds one line of the netmap stream. A full map of
// 10,000 peers is about 3 MB of JSON; anything above this limit is refused
// before it is parsed.
const MaxNetmapMessageBytes = 16 << 20

// signContext separates netmap signatures from any other use of the key.
const signContext = "mcpmesh netmap v1\x00"

// Errors a node acts on when it checks a netmap message.
var (
	// ErrBadSignature means the message was not signed by the coordinator's
	// netmap key (forged, corrupted, or from another coordinator).
	ErrBadSignature = errors.New("api: netmap signature does not verify")
	// ErrMalformed means the bytes are not a well-formed signed message.
	ErrMalformed = errors.New("api: malformed netmap message")
)

// NetmapMessage is one message of the netmap stream: either a full map or a
// delta against the version the node already holds. Deltas name what changed
// only, so one node joining costs every other node O(1) bytes.
type NetmapMessage struct {
	// Version is the coordinator's netmap version this message brings the
	// node to. Versions only grow; a node refuses anything not newer than
	// what it holds (except a Full map of the same version after a restart).
	Version uint64 `json:"version"`
	// From is the version a delta applies to; a node whose version differs
	// must not apply it and reconnects for a full map. Zero on full maps.
	From uint64 `json:"from,omitempty"`
	// Full marks a complete map: Peers is the whole peer set.
	Full bool `json:"full,omitempty"`
	// Node is the name of the recipient; a node refuses maps for another.
	Node string `json:"node"`
	// Issued and Expires bound how long the node may keep using the map
	// while the coordinator is unreachable (DESIGN rule 5).
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
	// Self is the recipient's own record (full maps, or when it changed).
	Self *Node `json:"self,omitempty"`
	// Peers: on a full map every peer; on a delta the peers added or changed.
	Peers []Peer `json:"peers,omitempty"`
	// Removed names peers that left this node's view (delta only).
	Removed []string `json:"removed,omitempty"`
	// RevokedSerials are SVID serials (hex) revoked and not yet expired: all
	// of them on a full map, the new ones on a delta.
	RevokedSerials []string `json:"revokedSerials,omitempty"`
	// Catalog lists the services this node may call; nil on a delta means
	// unchanged.
	Catalog *Catalog `json:"catalog,omitempty"`
	// Policy carries the rules for the services this node hosts; nil on a
	// delta means unchanged.
	Policy *PolicyBundle `json:"policy,omitempty"`
}

// Catalog is the set of services a node may call.
type Catalog struct {
	Services []Service `json:"services"`
}

// Service is an MCP service published on the mesh.
type Service struct {
	Name string   `json:"name"`
	Node string   `json:"node"` // the node that serves it
	Tags []string `json:"tags,omitempty"`
}

// PolicyBundle is what a serving node needs to decide calls to the services
// it hosts: a standalone policy document holding only their grants
// (mcp/policy's ForServices), never the rest of the admin's file.
type PolicyBundle struct {
	// Version is the policy version it was cut from; 0 means no policy has
	// been applied and every call is denied.
	Version  uint64   `json:"version"`
	Services []string `json:"services"`
	Document []byte   `json:"document,omitempty"`
}

// SignedMessage is the envelope on the wire: the payload, embedded as raw
// JSON, and an Ed25519 signature over signContext+payload. The verifier
// checks the payload's exact bytes as they arrived, never a re-encoding of
// them, and embedding them raw (not base64) keeps deltas small.
type SignedMessage struct {
	Payload   json.RawMessage `json:"payload"`
	Signature []byte          `json:"sig"`
}

// Sign encodes m and signs it, returning one line (with trailing newline)
// ready to write to the stream.
func Sign(key ed25519.PrivateKey, m *NetmapMessage) ([]byte, error) {
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("api: encode netmap: %w", err)
	}
	sig := ed25519.Sign(key, signedBytes(payload))
	line, err := json.Marshal(SignedMessage{Payload: payload, Signature: sig})
	if err != nil {
		return nil, fmt.Errorf("api: encode envelope: %w", err)
	}
	return append(line, '\n'), nil
}

func signedBytes(payload []byte) []byte {
	b := make([]byte, 0, len(signContext)+len(payload))
	b = append(b, signContext...)
	return append(b, payload...)
}

// DecodeSigned parses one line of the stream, checks its size and signature,
// and only then decodes the payload strictly (unknown fields are refused).
// It does not check versions or the recipient; that is the node's job since
// only it knows what it holds.
func DecodeSigned(line []byte, pub ed25519.PublicKey) (*NetmapMessage, error) {
	if len(line) > MaxNetmapMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(line), MaxNetmapMessageBytes)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("api: netmap key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	var env SignedMessage
	if err := strictUnmarshal(line, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature has %d bytes", ErrMalformed, len(env.Signature))
	}
	if !ed25519.Verify(pub, signedBytes(env.Payload), env.Signature) {
		return nil, ErrBadSignature
	}
	var m NetmapMessage
	if err := strictUnmarshal(env.Payload, &m); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if m.Node == "" || m.Version == 0 {
		return nil, fmt.Errorf("%w: payload lacks node or version", ErrMalformed)
	}
	if !m.Full && m.From == 0 {
		return nil, fmt.Errorf("%w: delta without a base version", ErrMalformed)
	}
	if m.Full && (m.From != 0 || len(m.Removed) != 0) {
		return nil, fmt.Errorf("%w: full map with delta fields", ErrMalformed)
	}
	return &m, nil
}

// strictUnmarshal decodes exactly one JSON value, refusing unknown fields and
// trailing data, so two parsers can never read the same bytes differently.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
