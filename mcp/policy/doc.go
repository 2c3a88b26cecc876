// Package policy owns the mcpmesh policy language: a HuJSON file that says
// which identities may call which tools, read which resources and get which
// prompts of which MCP services. It parses the file (keeping line:column
// positions for every error), validates and compiles it into an index that
// decides a call without scanning every grant, evaluates optional CEL `when`
// conditions, explains decisions, runs the tests embedded in the file, and cuts
// a policy down to the grants a serving node needs (ForServices).
//
// The package is a library below the node and the coordinator: it knows
// nothing of WireGuard, netmaps, stores or the MCP wire protocol. Callers hand
// it identities and service names as plain values and get a Decision back.
//
// A policy file looks like this:
//
//	{
//	  "groups":    {"group:clinical-agents": ["node:ward-7-laptop", "tag:triage-bot"]},
//	  "tagOwners": {"tag:triage-bot": ["group:admins"], "tag:billing": ["group:admins"]},
//	  "grants": [
//	    {"src": ["group:clinical-agents"], "dst": ["svc:ehr"], "tools": ["read_*", "search_patients"]},
//	    {"src": ["tag:billing"], "dst": ["svc:ehr"], "tools": ["get_invoice"], "when": "args.amount < 10000"},
//	  ],
//	  "tests": [
//	    {"src": "node:ward-7-laptop", "dst": "svc:ehr", "allow": ["read_chart"], "deny": ["delete_chart"]},
//	  ],
//	}
//
// Everything not granted is denied. Grants only add permissions, so the order
// of grants never changes whether a call is allowed; it only decides which
// grant a Decision names (the first one in the file that allows the call).
package policy
