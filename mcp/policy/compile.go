package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"cel.dev/cel-go/cel"
)

// This file checks what a parsed file means and compiles it: group
// membership is resolved here, once, so that deciding a call never walks
// groups; CEL conditions are compiled here, once.

// Policy is a validated, compiled policy. It is immutable and safe for
// concurrent use: the coordinator compiles one per applied version and a
// serving node swaps in a new one when its netmap brings a new version.
type Policy struct {
	file      string
	src       []byte
	groups    map[string][]str       // "group:x" -> members as written
	resolved  map[string][]string    // "group:x" -> canonical principals, groups expanded
	tagOwners map[string][]str       // "tag:x" -> owners as written
	owners    map[string]*principals // "tag:x" -> owners, groups expanded (MayUseTag)
	grants    []*grant
	tests     int

	bySvc map[string]*dstIndex // service name -> grants naming svc:NAME
	byTag map[string]*dstIndex // service tag -> grants naming tag:T in dst
}

// principals is a compiled set of identities: a grant's sources or a tag's
// owners, with groups expanded.
type principals struct {
	nodes  []string // node names, without "node:"
	tags   []string // tags, without "tag:"
	spiffe []glob   // SPIFFE ID patterns
	any    bool     // "*"
}

// add adds one canonical principal ("*", node:N, tag:T or a SPIFFE ID
// pattern) that the compiler has validated.
func (ps *principals) add(p string) {
	switch {
	case p == "*":
		ps.any = true
	case strings.HasPrefix(p, "node:"):
		ps.nodes = append(ps.nodes, p[len("node:"):])
	case strings.HasPrefix(p, "tag:"):
		ps.tags = append(ps.tags, p[len("tag:"):])
	case strings.HasPrefix(p, "spiffe://"):
		if gl, err := compileGlob(p); err == nil {
			ps.spiffe = append(ps.spiffe, gl)
		}
	}
}

func (ps *principals) spiffeMatch(id string) bool {
	if id == "" {
		return false
	}
	for i := range ps.spiffe {
		if ps.spiffe[i].match(id) {
			return true
		}
	}
	return false
}

// match reports whether id is one of the principals: by name, by one of its
// tags, by its SPIFFE ID, or through "*".
func (ps *principals) match(id Identity) bool {
	if ps.any || (id.Name != "" && slices.Contains(ps.nodes, id.Name)) {
		return true
	}
	for _, t := range id.Tags {
		if slices.Contains(ps.tags, t) {
			return true
		}
	}
	return ps.spiffeMatch(id.ID)
}

// grant is one compiled grant.
type grant struct {
	ref    GrantRef
	srcRaw []str    // as written, for ForServices
	src    []string // canonical principals, groups expanded, deduplicated
	principals

	dstRaw []str
	svcs   []string
	dtags  []string

	names [numKinds]nameSet

	when string
	prg  cel.Program

	allowReason string // "grant at f:l:c", built once so Decide does not allocate
	falseReason string // "grant at f:l:c: when condition false"
}

// nameSet is what a grant allows for one kind: literal names (compared
// whole) and globs.
type nameSet struct {
	raw   []string
	lits  []string
	globs []glob
}

func (n *nameSet) present() bool { return len(n.raw) > 0 }

func (n *nameSet) match(s string) bool {
	for _, l := range n.lits {
		if l == s {
			return true
		}
	}
	for i := range n.globs {
		if n.globs[i].match(s) {
			return true
		}
	}
	return false
}

type compiler struct {
	*parser
	p *Policy
}

// celEnv is built once per process: it is immutable and costly to build, and
// every policy declares the same variables.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("src", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("tool", cel.StringType),
		cel.Variable("dst", cel.StringType),
		cel.Variable("kind", cel.StringType),
		cel.CrossTypeNumericComparisons(true),
	)
})

// celCostLimit bounds the work one condition may do on one call, so that a
// caller cannot make a serving node spin by sending huge arguments to a
// condition that iterates over them.
const celCostLimit = 1_000_000

// Parse parses, validates and compiles a policy file and runs the tests it
// embeds. filename is used only in error messages and grant references. A
// *Policy is returned only when the file is valid and every test passes;
// otherwise the error is an ErrorList with every problem found, sorted by
// position, so an invalid policy can never replace a valid one by accident.
func Parse(filename string, src []byte) (*Policy, error) {
	src = slices.Clone(src)
	ps := &parser{file: filename, src: src, lines: newLineIndex(src)}
	raw := ps.parse()
	if raw == nil {
		return nil, ps.errs
	}
	c := &compiler{parser: ps, p: &Policy{
		file:      filename,
		src:       src,
		groups:    map[string][]str{},
		resolved:  map[string][]string{},
		tagOwners: map[string][]str{},
		owners:    map[string]*principals{},
		bySvc:     map[string]*dstIndex{},
		byTag:     map[string]*dstIndex{},
	}}
	c.compile(raw)
	if len(c.errs) == 0 {
		c.p.buildIndex()
		c.runTests(raw.tests)
	}
	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs
	}
	return c.p, nil
}

func (c *compiler) compile(raw *rawPolicy) {
	for _, t := range raw.tagOwners {
		if _, ok := c.checkPrefixed(t.tag, "tag:", "tagOwners key"); !ok {
			continue
		}
		c.p.tagOwners[t.tag.s] = t.owners
	}
	for _, g := range raw.groups {
		if _, ok := c.checkPrefixed(g.name, "group:", "groups key"); !ok {
			continue
		}
		c.p.groups[g.name.s] = g.members
	}
	for _, t := range raw.tagOwners {
		for _, o := range t.owners {
			switch {
			case strings.HasPrefix(o.s, "group:"):
				c.checkGroup(o)
			case strings.HasPrefix(o.s, "tag:"):
				c.checkTag(o)
			case strings.HasPrefix(o.s, "node:"):
				c.checkPrefixed(o, "node:", "tag owner")
			default:
				c.errorf(o.p, "bad tag owner %q: want group:G, tag:T or node:NAME", o.s)
			}
		}
	}
	state := map[string]int{} // shared, so that each cycle is reported once
	for _, g := range raw.groups {
		if _, ok := c.p.groups[g.name.s]; ok {
			c.resolveGroup(g.name.s, nil, state)
		}
	}
	for _, t := range raw.tagOwners {
		if _, ok := c.p.tagOwners[t.tag.s]; !ok {
			continue
		}
		ps := &principals{}
		for _, o := range t.owners {
			if strings.HasPrefix(o.s, "group:") {
				for _, m := range c.p.resolved[o.s] {
					ps.add(m)
				}
				continue
			}
			ps.add(o.s) // node:N or tag:T; anything else was reported above
		}
		c.p.owners[t.tag.s] = ps
	}
	for i := range raw.grants {
		c.grant(i, &raw.grants[i])
	}
}

// validName refuses names that would be ambiguous in the language: empty,
// with spaces or control characters, or with glob characters (node, tag,
// group and service names are literal).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '*' || r == '?' || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

func (c *compiler) checkPrefixed(s str, prefix, what string) (string, bool) {
	name, ok := strings.CutPrefix(s.s, prefix)
	if !ok {
		c.errorf(s.p, "%s %q: want %sNAME", what, s.s, prefix)
		return "", false
	}
	if !validName(name) {
		c.errorf(s.p, "%s %q: bad name", what, s.s)
		return "", false
	}
	return name, true
}

func (c *compiler) checkGroup(s str) bool {
	if _, ok := c.p.groups[s.s]; !ok {
		c.errorf(s.p, "unknown group %q", s.s)
		return false
	}
	return true
}

// checkTag enforces that every tag used anywhere has an owner: a tag nobody
// owns cannot have been assigned by anyone, so using it is almost certainly a
// typo that would silently deny (or, worse, later allow) calls.
func (c *compiler) checkTag(s str) bool {
	if _, ok := c.checkPrefixed(s, "tag:", "tag"); !ok {
		return false
	}
	if _, ok := c.p.tagOwners[s.s]; !ok {
		c.errorf(s.p, "tag without owner: %q is not in tagOwners", s.s)
		return false
	}
	return true
}

const (
	unvisited = iota
	visiting
	done
)

// resolveGroup expands a group into canonical principals, detecting cycles.
// path holds the groups being expanded, for the cycle message.
func (c *compiler) resolveGroup(name string, path []string, state map[string]int) []string {
	switch state[name] {
	case done:
		return c.p.resolved[name]
	case visiting:
		return nil // reported by the caller, which knows the position
	}
	state[name] = visiting
	path = append(path, name)
	var out []string
	for _, m := range c.p.groups[name] {
		switch {
		case strings.HasPrefix(m.s, "group:"):
			if !c.checkGroup(m) {
				continue
			}
			if state[m.s] == visiting {
				i := slices.Index(path, m.s)
				c.errorf(m.p, "group cycle: %s -> %s", strings.Join(path[i:], " -> "), m.s)
				continue
			}
			out = appendUnique(out, c.resolveGroup(m.s, path, state)...)
		case m.s == "*":
			c.errorf(m.p, "bad group member \"*\": use \"*\" in a grant's src instead")
		default:
			if p, ok := c.principal(m, "group member"); ok {
				out = appendUnique(out, p)
			}
		}
	}
	state[name] = done
	c.p.resolved[name] = out
	return out
}

// principal validates a non-group source and returns its canonical form.
func (c *compiler) principal(s str, what string) (string, bool) {
	switch {
	case strings.HasPrefix(s.s, "node:"):
		_, ok := c.checkPrefixed(s, "node:", what)
		return s.s, ok
	case strings.HasPrefix(s.s, "tag:"):
		return s.s, c.checkTag(s)
	case strings.HasPrefix(s.s, "spiffe://"):
		if _, err := compileGlob(s.s); err != nil {
			c.errorf(s.p, "%s: %v", what, err)
			return "", false
		}
		return s.s, true
	}
	c.errorf(s.p, "bad %s %q: want node:NAME, tag:T, group:G, a SPIFFE ID pattern (spiffe://...) or \"*\"", what, s.s)
	return "", false
}

func appendUnique(dst []string, items ...string) []string {
	for _, it := range items {
		if !slices.Contains(dst, it) {
			dst = append(dst, it)
		}
	}
	return dst
}

func (c *compiler) grant(i int, r *rawGrant) {
	g := &grant{
		ref:    GrantRef{Index: i, File: c.file, Line: r.p.line, Col: r.p.col},
		srcRaw: r.src,
		dstRaw: r.dst,
	}
	if r.origin != nil {
		ref, err := parseOrigin(r.origin.s)
		if err != nil {
			c.errorf(r.origin.p, "bad origin: %v", err)
		} else {
			ref.Index = i
			g.ref = ref
		}
	}
	ok := true
	for _, s := range r.src {
		switch {
		case s.s == "*":
			g.src = appendUnique(g.src, "*")
		case strings.HasPrefix(s.s, "group:"):
			if c.checkGroup(s) {
				g.src = appendUnique(g.src, c.p.resolved[s.s]...)
			} else {
				ok = false
			}
		default:
			if p, pok := c.principal(s, "source"); pok {
				g.src = appendUnique(g.src, p)
			} else {
				ok = false
			}
		}
	}
	for _, p := range g.src {
		g.principals.add(p)
	}
	for _, d := range r.dst {
		switch {
		case strings.HasPrefix(d.s, "svc:"):
			if name, dok := c.checkPrefixed(d, "svc:", "destination"); dok {
				g.svcs = appendUnique(g.svcs, name)
			} else {
				ok = false
			}
		case strings.HasPrefix(d.s, "tag:"):
			if c.checkTag(d) {
				g.dtags = appendUnique(g.dtags, d.s[len("tag:"):])
			} else {
				ok = false
			}
		default:
			c.errorf(d.p, "bad destination %q: want svc:NAME or tag:T", d.s)
			ok = false
		}
	}
	anyNames := false
	for k := range numKinds {
		for _, n := range r.names[k] {
			gl, err := compileGlob(n.s)
			if err != nil {
				c.errorf(n.p, "%s: %v", kindKeys[k], err)
				ok = false
				continue
			}
			ns := &g.names[k]
			ns.raw = append(ns.raw, n.s)
			if gl.lit {
				ns.lits = append(ns.lits, n.s)
			} else {
				ns.globs = append(ns.globs, gl)
			}
			anyNames = true
		}
	}
	switch {
	case len(r.src) == 0:
		c.errorf(r.p, "grant can never match: src is empty")
	case ok && len(g.src) == 0:
		c.errorf(r.p, "grant can never match: src resolves to no identities (empty groups)")
	}
	if len(r.dst) == 0 {
		c.errorf(r.p, "grant can never match: dst is empty")
	}
	if !anyNames && ok {
		c.errorf(r.p, "grant can never match: it grants no tools, resources or prompts")
	}
	if r.when != nil {
		g.when = r.when.s
		g.prg = c.compileWhen(*r.when)
	}
	g.allowReason = "grant at " + g.ref.String()
	g.falseReason = g.allowReason + ": when condition false"
	c.p.grants = append(c.p.grants, g)
}

// compileWhen compiles a CEL condition once, at compile time. Errors point
// into the expression itself when the string has no escapes (so columns in
// the file and in the expression line up), else at the string.
func (c *compiler) compileWhen(w str) cel.Program {
	env, err := celEnv()
	if err != nil {
		c.errorf(w.p, "when: cannot set up CEL: %v", err)
		return nil
	}
	if strings.TrimSpace(w.s) == "" {
		c.errorf(w.p, "when: empty condition (leave \"when\" out instead)")
		return nil
	}
	ast, iss := env.Compile(w.s)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			at := w.p
			end := w.off + 1 + len(w.s)
			if e.Location.Line() == 1 && end < len(c.src) && string(c.src[w.off+1:end]) == w.s && c.src[end] == '"' {
				at.col += 1 + e.Location.Column()
			}
			c.errorf(at, "when: CEL: %s", e.Message)
		}
		return nil
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		c.errorf(w.p, "when: not a bool: condition has type %s", ast.OutputType())
		return nil
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(celCostLimit))
	if err != nil {
		c.errorf(w.p, "when: CEL: %v", err)
		return nil
	}
	return prg
}

// parseOrigin reads "FILE:LINE:COL", the reference ForServices records so
// that a serving node names the grant in the admin's file, not in the
// excerpt it received.
func parseOrigin(s string) (GrantRef, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return GrantRef{}, fmt.Errorf("%q: want FILE:LINE:COL", s)
	}
	j := strings.LastIndexByte(s[:i], ':')
	if j < 0 {
		return GrantRef{}, fmt.Errorf("%q: want FILE:LINE:COL", s)
	}
	line, err1 := strconv.Atoi(s[j+1 : i])
	col, err2 := strconv.Atoi(s[i+1:])
	if err1 != nil || err2 != nil || line < 1 || col < 1 {
		return GrantRef{}, fmt.Errorf("%q: want FILE:LINE:COL", s)
	}
	return GrantRef{File: s[:j], Line: line, Col: col}, nil
}
