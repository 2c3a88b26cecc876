// Package mcp is the serving node's MCP-aware L7 proxy for the Streamable
// HTTP transport. For each mesh-only service it serves /svc/{name}/mcp,
// learns who calls from the tunnel (a "who is this address" function, never
// the request), decodes every JSON-RPC message strictly, decides it with the
// policy (mcp/policy) before anything reaches the upstream, forwards exactly
// what it decided on (re-encoded, never the caller's bytes), filters list
// answers (tools, resources, resource templates, prompts) down to what the
// caller may use, in plain JSON and in SSE streams alike, binds each upstream
// session to the identity that opened it, and reports every decision to an
// audit function.
//
// It speaks every protocol version of the official MCP Go SDK, 2024-11-05
// through 2026-07-28: JSON-RPC batches only before 2025-06-18 (decided element
// by element), and for 2026-07-28 the Mcp-Method and Mcp-Name headers must
// agree with the body.
//
// The package knows nothing of WireGuard, tunnels, the node or the
// coordinator (except the wire type of an audit event): it is handed a
// net.Listener and a WhoIs function, and upstreams are loopback URLs.
package mcp
