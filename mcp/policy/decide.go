package policy

import (
	"fmt"
	"strings"

	"cel.dev/cel-go/interpreter"
)

// Identity is the caller as the serving node knows it from the tunnel: the
// node's name, its SPIFFE ID and its tags. It is never taken from the request
// itself.
type Identity struct {
	Name string   // node name, matched by node:NAME
	ID   string   // SPIFFE ID, matched by spiffe:// patterns
	Tags []string // tags without the "tag:" prefix, matched by tag:T
}

// Service is a destination: an MCP service's name (svc:NAME) and the tags it
// carries (tag:T in a grant's dst). Tags are given without the "tag:" prefix.
type Service struct {
	Name string
	Tags []string
}

// Kind says which of the three separately granted things a request asks
// for. The zero value is KindTool, the common case.
type Kind int

// The kinds of MCP request a grant can allow.
const (
	KindTool     Kind = iota // tools/call; Name is the tool name
	KindResource             // resources/read; Name is the resource URI
	KindPrompt               // prompts/get; Name is the prompt name
	numKinds
)

var kindNames = [numKinds]string{"tool", "resource", "prompt"}

// String returns "tool", "resource" or "prompt".
func (k Kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Request is one call to decide.
type Request struct {
	Src  Identity
	Dst  Service
	Kind Kind
	Name string         // tool name, resource URI or prompt name
	Args map[string]any // the call's arguments, seen by `when` as args
}

// Decision is the answer to a Request. Reason always says which rule decided,
// so that audit logs and error replies can explain a denial.
type Decision struct {
	Allow  bool
	Reason string
	Grant  *GrantRef // the grant that allowed, or whose condition denied; nil on default deny
}

// GrantRef names a grant by its position in the admin's file.
type GrantRef struct {
	Index     int // position in the grants array of the policy it was compiled from
	File      string
	Line, Col int
}

// String returns "FILE:LINE:COL", e.g. "acl.hujson:12:5".
func (r GrantRef) String() string { return fmt.Sprintf("%s:%d:%d", r.File, r.Line, r.Col) }

// ReasonDefaultDeny is the Reason of a Decision when no grant matches.
const ReasonDefaultDeny = "no grant matches (default deny)"

// srcIndex finds the grants that may match a caller without looking at the
// others: by node name, by each caller tag, plus the grants with SPIFFE
// patterns and with "*". Lists hold grant indexes in ascending order.
type srcIndex struct {
	nodes  map[string][]int32
	tags   map[string][]int32
	spiffe []int32
	any    []int32
}

// dstIndex holds one srcIndex per kind, for one service name or service tag.
type dstIndex struct {
	kinds [numKinds]srcIndex
}

func (p *Policy) buildIndex() {
	get := func(m map[string]*dstIndex, k string) *dstIndex {
		d := m[k]
		if d == nil {
			d = &dstIndex{}
			m[k] = d
		}
		return d
	}
	for i, g := range p.grants {
		var dsts []*dstIndex
		for _, s := range g.svcs {
			dsts = append(dsts, get(p.bySvc, s))
		}
		for _, t := range g.dtags {
			dsts = append(dsts, get(p.byTag, t))
		}
		for _, d := range dsts {
			for k := range numKinds {
				if !g.names[k].present() {
					continue
				}
				si := &d.kinds[k]
				gi := int32(i)
				if g.any {
					si.any = append(si.any, gi)
					continue // "*" covers every other source of this grant
				}
				for _, n := range g.nodes {
					if si.nodes == nil {
						si.nodes = map[string][]int32{}
					}
					si.nodes[n] = append(si.nodes[n], gi)
				}
				for _, t := range g.tags {
					if si.tags == nil {
						si.tags = map[string][]int32{}
					}
					si.tags[t] = append(si.tags[t], gi)
				}
				if len(g.spiffe) > 0 {
					si.spiffe = append(si.spiffe, gi)
				}
			}
		}
	}
}

// search is the state of one decision. It lives on the stack.
type search struct {
	p          *Policy
	r          Request
	ignoreWhen bool
	best       int32 // lowest allowing grant so far; len(grants) if none
	fail       int32 // lowest grant whose condition was false or failed
	failErr    error
	act        *activation // built on the first condition evaluated
}

// Decide decides a call. It looks only at the grants indexed under the
// request's service name and tags and the caller's name, tags, SPIFFE
// patterns and "*", never at every grant. Without `when` conditions it does
// not allocate. When several grants allow the call the first in the file is
// named. A condition that is false or fails to evaluate denies through that
// grant only; another grant may still allow.
func (p *Policy) Decide(r Request) Decision {
	s := search{p: p, r: r}
	s.run()
	return p.decision(s.best, s.fail, s.failErr, r.Kind)
}

// Visible reports whether some grant allows the request if its `when`
// condition is ignored. The proxy uses it to filter tools/list, resources/list
// and prompts/list: a tool whose use depends on its arguments is still
// listed, and the call itself is decided by Decide.
func (p *Policy) Visible(r Request) bool {
	s := search{p: p, r: r, ignoreWhen: true}
	s.run()
	return int(s.best) < len(p.grants)
}

func (s *search) run() {
	s.best = int32(len(s.p.grants))
	s.fail = s.best
	if s.r.Kind < 0 || s.r.Kind >= numKinds {
		return
	}
	if d := s.p.bySvc[s.r.Dst.Name]; d != nil {
		s.scanDst(d)
	}
	for _, t := range s.r.Dst.Tags {
		if d := s.p.byTag[t]; d != nil {
			s.scanDst(d)
		}
	}
}

func (s *search) scanDst(d *dstIndex) {
	si := &d.kinds[s.r.Kind]
	s.scan(si.any, false)
	if s.r.Src.Name != "" {
		s.scan(si.nodes[s.r.Src.Name], false)
	}
	for _, t := range s.r.Src.Tags {
		s.scan(si.tags[t], false)
	}
	if s.r.Src.ID != "" {
		s.scan(si.spiffe, true)
	}
}

func (s *search) scan(list []int32, checkSpiffe bool) {
	for _, gi := range list {
		if gi >= s.best {
			return // lists are sorted; nothing here can beat what we have
		}
		g := s.p.grants[gi]
		if !g.names[s.r.Kind].match(s.r.Name) {
			continue
		}
		if checkSpiffe && !g.spiffeMatch(s.r.Src.ID) {
			continue
		}
		if g.prg != nil && !s.ignoreWhen {
			ok, err := s.eval(g)
			if !ok {
				if gi < s.fail {
					s.fail, s.failErr = gi, err
				}
				continue
			}
		}
		s.best = gi
		return
	}
}

// decision turns the outcome of a search into a Decision. It takes values,
// not the search, so that the search (and the request) stay on the stack.
func (p *Policy) decision(best, fail int32, failErr error, kind Kind) Decision {
	if int(best) < len(p.grants) {
		g := p.grants[best]
		return Decision{Allow: true, Reason: g.allowReason, Grant: &g.ref}
	}
	if int(fail) < len(p.grants) {
		g := p.grants[fail]
		if failErr != nil {
			return Decision{Reason: g.allowReason + ": when condition error: " + failErr.Error(), Grant: &g.ref}
		}
		return Decision{Reason: g.falseReason, Grant: &g.ref}
	}
	if kind < 0 || kind >= numKinds {
		return Decision{Reason: fmt.Sprintf("unknown request kind %d (default deny)", int(kind))}
	}
	return Decision{Reason: ReasonDefaultDeny}
}

// eval runs a grant's condition. Any evaluation error (a missing argument, a
// type mismatch, the cost limit) denies through this grant, with the error.
func (s *search) eval(g *grant) (bool, error) {
	if s.act == nil {
		// A copy, so that the request itself never escapes to the heap and
		// decisions without conditions stay allocation-free.
		s.act = &activation{r: s.r}
	}
	out, _, err := g.prg.Eval(s.act)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition returned %s, not a bool", out.Type().TypeName())
	}
	return b, nil
}

var emptyArgs = map[string]any{}

// activation exposes a Request to CEL, building the src map only when a
// condition asks for it.
type activation struct {
	r   Request
	src map[string]any
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "args":
		if a.r.Args == nil {
			return emptyArgs, true
		}
		return a.r.Args, true
	case "src":
		if a.src == nil {
			tags := a.r.Src.Tags
			if tags == nil {
				tags = []string{}
			}
			a.src = map[string]any{"name": a.r.Src.Name, "id": a.r.Src.ID, "tags": tags}
		}
		return a.src, true
	case "tool":
		return a.r.Name, true
	case "dst":
		return a.r.Dst.Name, true
	case "kind":
		return a.r.Kind.String(), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// Explain decides a call and says why in one line, for `mcpmesh policy
// explain` and for denial messages: "allow: grant at acl.hujson:12:5",
// "deny: no grant matches (default deny)", "deny: grant at acl.hujson:9:5:
// when condition false".
func (p *Policy) Explain(r Request) string {
	d := p.Decide(r)
	if d.Allow {
		return "allow: " + d.Reason
	}
	return "deny: " + d.Reason
}

// CanReach reports whether any grant at all lets src call something on dst,
// ignoring tool names and conditions. Visibility follows it: the coordinator
// makes two nodes WireGuard peers only if one can reach a service of the
// other.
func (p *Policy) CanReach(src Identity, dst Service) bool {
	check := func(d *dstIndex) bool {
		if d == nil {
			return false
		}
		for k := range d.kinds {
			si := &d.kinds[k]
			if len(si.any) > 0 || (src.Name != "" && len(si.nodes[src.Name]) > 0) {
				return true
			}
			for _, t := range src.Tags {
				if len(si.tags[t]) > 0 {
					return true
				}
			}
			if src.ID != "" {
				for _, gi := range si.spiffe {
					if p.grants[gi].spiffeMatch(src.ID) {
						return true
					}
				}
			}
		}
		return false
	}
	if check(p.bySvc[dst.Name]) {
		return true
	}
	for _, t := range dst.Tags {
		if check(p.byTag[t]) {
			return true
		}
	}
	return false
}

// MayUseTag reports whether src may give a service the tag T (given without
// "tag:", like Service.Tags): whether tagOwners["tag:T"] names src, by
// node:NAME, by a tag src carries, or by a group holding either or a SPIFFE
// ID pattern that matches src. Owners are matched as grant sources are. A tag
// with no tagOwners entry may be used by no one. A service tag decides which
// grants reach a service, so the coordinator lets a node's service carry
// only the tags its node may use.
func (p *Policy) MayUseTag(src Identity, tag string) bool {
	ps := p.owners["tag:"+tag]
	return ps != nil && ps.match(src)
}

// Source returns the original bytes of the file, comments and all, so the
// coordinator can store and show exactly what the admin wrote.
func (p *Policy) Source() []byte { return p.src }

// File returns the file name given to Parse.
func (p *Policy) File() string { return p.file }

// Tests returns how many embedded tests ran (and passed: a Policy exists only
// if all of them did), so `policy check` can say "N tests passed".
func (p *Policy) Tests() int { return p.tests }

// Grants returns how many grants the policy has.
func (p *Policy) Grants() int { return len(p.grants) }

// String describes a request for messages: "node:a -> svc:b tool \"x\"".
func (r Request) String() string {
	src := r.Src.ID
	if r.Src.Name != "" {
		src = "node:" + r.Src.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s -> svc:%s %s %q", src, r.Dst.Name, r.Kind, r.Name)
	return b.String()
}
