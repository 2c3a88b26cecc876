package mcp

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// JSON-RPC error codes the proxy answers with.
const (
	// CodeDenied is the JSON-RPC error code of a call the policy denied,
	// in the implementation-defined server error range.
	CodeDenied = -32001
	// CodeHeaderMismatch is the code of a 2026-07-28 request whose
	// Mcp-Method or Mcp-Name header disagrees with its body (the Go SDK's
	// code for the same error).
	CodeHeaderMismatch = -32020

	codeParse          = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeInternal       = -32603
	codeNotFound       = -32002 // unknown service or session
)

// reachMethods are the methods a caller may use on any service it can reach
// at all: session plumbing and lists (whose answers are filtered).
var reachMethods = map[string]bool{
	"initialize":                       true,
	"ping":                             true,
	"notifications/initialized":        true,
	"notifications/cancelled":          true,
	"notifications/progress":           true,
	"notifications/roots/list_changed": true,
	"logging/setLevel":                 true,
	"tools/list":                       true,
	"resources/list":                   true,
	"resources/templates/list":         true,
	"prompts/list":                     true,
	"tasks/list":                       true,
	"server/discover":                  true,
}

// listMethods are the methods whose answers are filtered.
var listMethods = map[string]bool{
	"tools/list":               true,
	"resources/list":           true,
	"resources/templates/list": true,
	"prompts/list":             true,
	"tasks/list":               true,
}

// verdict is the decision on one message.
type verdict struct {
	allow  bool
	code   int    // JSON-RPC error code when denied
	reason string // why, for the error message the caller sees
	rule   string // the rule that decided, for the audit trail (reason when empty)
	name   string // tool name, resource URI or prompt name
	digest string // argsDigest of the arguments, if any
}

// decider decides the messages of one HTTP request.
type decider struct {
	caller Caller
	id     policy.Identity
	svc    *service
	pol    *policy.Policy
	ver    uint64
	reach  bool
	key    []byte // of the argument digests (Config.DigestKey)
}

func (d *decider) unreachable() string {
	if d.pol == nil {
		return "no policy loaded (default deny)"
	}
	return fmt.Sprintf("no grant lets %s reach svc:%s (default deny)", d.caller.ID, d.svc.Name)
}

// decide decides one message.
func (d *decider) decide(m *message) verdict {
	if m.kind == kindResponse {
		// A client's answer to a server-to-client request
		// (sampling, elicitation, roots).
		if !d.reach {
			return verdict{code: CodeDenied, reason: d.unreachable()}
		}
		return verdict{allow: true, reason: "caller can reach svc:" + d.svc.Name}
	}
	switch m.method {
	case "tools/call":
		return d.named(m, policy.KindTool, "name", "tool")
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return d.named(m, policy.KindResource, "uri", "resource")
	case "prompts/get":
		return d.named(m, policy.KindPrompt, "name", "prompt")
	case "completion/complete":
		return d.completion(m)
	case "tasks/get", "tasks/result", "tasks/cancel":
		return d.task(m)
	case "subscriptions/listen":
		return d.listen(m)
	}
	if !reachMethods[m.method] {
		return verdict{code: codeMethodNotFound, reason: fmt.Sprintf("method %q is not known to the mcpmesh proxy (denied)", m.method)}
	}
	if !d.reach {
		return verdict{code: CodeDenied, reason: d.unreachable()}
	}
	return verdict{allow: true, reason: "caller can reach svc:" + d.svc.Name}
}

// named decides a call on a named tool, resource or prompt.
func (d *decider) named(m *message, kind policy.Kind, key, what string) verdict {
	name, ok := m.params[key].(string)
	if !ok || name == "" {
		return verdict{code: codeInvalidParams, reason: fmt.Sprintf("%s: params.%s must be a non-empty string", m.method, key)}
	}
	v := verdict{name: name}
	var args map[string]any
	if a, present := m.params["arguments"]; present && kind != policy.KindResource {
		ao, ok := a.(map[string]any)
		if !ok && a != nil {
			v.code, v.reason = codeInvalidParams, m.method+": params.arguments must be an object"
			return v
		}
		v.digest = argsDigest(d.key, a)
		args = policyArgs(ao)
	}
	if d.pol == nil {
		v.code, v.reason, v.rule = CodeDenied, fmt.Sprintf("%s %q denied for %s: %s", what, name, d.caller.ID, d.unreachable()), d.unreachable()
		return v
	}
	dec := d.pol.Decide(policy.Request{Src: d.id, Dst: d.svc.dst, Kind: kind, Name: name, Args: args})
	if dec.Allow {
		v.allow, v.reason = true, dec.Reason
		return v
	}
	v.code, v.reason, v.rule = CodeDenied, fmt.Sprintf("%s %q denied for %s: %s", what, name, d.caller.ID, dec.Reason), dec.Reason
	return v
}

// completion allows completion/complete for a prompt or resource template
// the caller may see, so completions do not leak hidden names.
func (d *decider) completion(m *message) verdict {
	if !d.reach {
		return verdict{code: CodeDenied, reason: d.unreachable()}
	}
	ref, _ := m.params["ref"].(map[string]any)
	var kind policy.Kind
	var name string
	switch ref["type"] {
	case "ref/prompt":
		kind, name = policy.KindPrompt, str(ref["name"])
	case "ref/resource":
		kind, name = policy.KindResource, str(ref["uri"])
	default:
		return verdict{code: codeInvalidParams, reason: "completion/complete: params.ref.type must be ref/prompt or ref/resource"}
	}
	if !d.pol.Visible(policy.Request{Src: d.id, Dst: d.svc.dst, Kind: kind, Name: name}) {
		return verdict{name: name, code: CodeDenied, reason: fmt.Sprintf("completion for %s %q denied for %s: no grant allows it", kind, name, d.caller.ID)}
	}
	return verdict{allow: true, name: name, reason: "caller may see " + kind.String() + " " + strconv.Quote(name)}
}

// listen decides subscriptions/listen (2026-07-28), a stream of the
// notifications the client opts in to. Its resource subscriptions are
// decided one by one as resources/subscribe is, and one denied denies the
// call: otherwise the server would run its subscribe handler for, and tell
// the caller about updates to, a resource the caller may not read.
func (d *decider) listen(m *message) verdict {
	if !d.reach {
		return verdict{code: CodeDenied, reason: d.unreachable()}
	}
	bad := func(what string) verdict {
		return verdict{code: codeInvalidParams, reason: "subscriptions/listen: " + what}
	}
	var subs []any
	if n := m.params["notifications"]; n != nil {
		no, ok := n.(map[string]any)
		if !ok {
			return bad("params.notifications must be an object")
		}
		if rs := no["resourceSubscriptions"]; rs != nil {
			if subs, ok = rs.([]any); !ok {
				return bad("params.notifications.resourceSubscriptions must be an array of URIs")
			}
		}
	}
	for _, s := range subs {
		uri, ok := s.(string)
		if !ok || uri == "" {
			return bad("params.notifications.resourceSubscriptions must hold non-empty strings")
		}
		dec := d.pol.Decide(policy.Request{Src: d.id, Dst: d.svc.dst, Kind: policy.KindResource, Name: uri})
		if !dec.Allow {
			return verdict{name: uri, code: CodeDenied, rule: dec.Reason,
				reason: fmt.Sprintf("subscription to resource %q denied for %s: %s", uri, d.caller.ID, dec.Reason)}
		}
	}
	return verdict{allow: true, reason: "caller can reach svc:" + d.svc.Name}
}

func str(v any) string { s, _ := v.(string); return s }

// DigestPrefix starts every argument digest in an audit event.
const DigestPrefix = "hmac-sha256:"

// argsDigest is DigestPrefix and the hex HMAC-SHA256, under key, of the
// canonical JSON (sorted keys, numbers as written) of a call's arguments.
// Keyed, because arguments are often guessable (a patient number, an
// account id): a plain hash in an audit log shipped off the node would
// give them away to anyone who tries the candidates.
func argsDigest(key []byte, args any) string {
	m := hmac.New(sha256.New, key)
	m.Write(encodeValue(args))
	return DigestPrefix + hex.EncodeToString(m.Sum(nil))
}

// ArgsDigest is the digest an audit event records for a call whose
// arguments are the JSON object arguments, under the serving node's key:
// how an investigator who holds that key checks which arguments a call
// had (`mcpmesh audit digest`). Key order and spacing do not matter;
// numbers count as written.
func ArgsDigest(key, arguments []byte) (string, error) {
	v, err := decodeStrict(arguments)
	if err != nil {
		return "", fmt.Errorf("mcp: arguments: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return "", errors.New("mcp: arguments must be a JSON object, as in a tools/call")
	}
	return argsDigest(key, v), nil
}

// policyArgs converts decoded arguments to what a policy condition sees:
// plain JSON values with float64 numbers, as encoding/json decodes them.
func policyArgs(a map[string]any) map[string]any {
	if a == nil {
		return nil
	}
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = plainJSON(v)
	}
	return out
}

func plainJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return string(x)
		}
		return f
	case map[string]any:
		return policyArgs(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plainJSON(e)
		}
		return out
	}
	return v
}

// event is the audit event of one decision.
func (p *Proxy) event(d *decider, start time.Time, method string, v verdict, sid string) api.AuditEvent {
	dec := "deny"
	if v.allow {
		dec = "allow"
	}
	svc := ""
	if d.svc != nil {
		svc = d.svc.Name
	}
	return api.AuditEvent{
		Time:       start.UTC(),
		Node:       p.cfg.Node,
		Caller:     d.caller.ID,
		Service:    svc,
		Method:     method,
		Tool:       v.name,
		Decision:   dec,
		Reason:     cmp.Or(v.rule, v.reason),
		Policy:     d.ver,
		LatencyUS:  time.Since(start).Microseconds(),
		ArgsDigest: v.digest,
		Session:    sid,
	}
}

// record reports decisions, all or none (Config.Audit).
func (p *Proxy) record(evs ...api.AuditEvent) (durable func() error, err error) {
	if p.cfg.Audit == nil || len(evs) == 0 {
		return nil, nil
	}
	return p.cfg.Audit(evs)
}

// auditNow records a decision that is answered at once (a denial, a
// message that could not be decided) and waits until it is durable. A
// failure to record is logged; the request is refused either way.
func (p *Proxy) auditNow(d *decider, start time.Time, method string, v verdict, sid string) {
	durable, err := p.record(p.event(d, start, method, v, sid))
	if err == nil && durable != nil {
		err = durable()
	}
	if err != nil {
		p.log.Error("mcp: audit event not recorded", "method", method, "decision", v.allow, "err", err)
	}
}

// task decides tasks/get, tasks/result and tasks/cancel: a task belongs to
// the identity whose call created it, and anyone else is told it does not
// exist (no oracle for task ids).
func (d *decider) task(m *message) verdict {
	id, ok := m.params["taskId"].(string)
	if !ok || id == "" {
		return verdict{code: codeInvalidParams, reason: m.method + ": params.taskId must be a non-empty string"}
	}
	if !d.reach {
		return verdict{name: id, code: CodeDenied, reason: d.unreachable()}
	}
	if owner, ok := d.svc.taskOwner(id); !ok || owner != d.caller.ID {
		return verdict{name: id, code: CodeDenied, reason: fmt.Sprintf("task %q not found for %s", id, d.caller.ID)}
	}
	return verdict{name: id, allow: true, reason: "task created by " + d.caller.ID}
}
