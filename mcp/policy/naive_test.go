package policy

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// naive is the reference evaluator: a linear scan over every grant, matching
// each src, dst and name as written in the file (groups walked on every call).
// The compiled evaluator must agree with it on every request.
type naive struct {
	p    *Policy
	glob func(pat, s string) bool
}

func (n *naive) srcMatch(entry string, id *Identity) bool {
	switch {
	case entry == "*":
		return true
	case strings.HasPrefix(entry, "node:"):
		return id.Name != "" && id.Name == entry[len("node:"):]
	case strings.HasPrefix(entry, "tag:"):
		return slices.Contains(id.Tags, entry[len("tag:"):])
	case strings.HasPrefix(entry, "group:"):
		for _, m := range n.p.groups[entry] {
			if n.srcMatch(m.s, id) {
				return true
			}
		}
		return false
	default:
		return id.ID != "" && n.glob(entry, id.ID)
	}
}

func (n *naive) dstMatch(entry string, svc *Service) bool {
	if name, ok := strings.CutPrefix(entry, "svc:"); ok {
		return svc.Name == name
	}
	return slices.Contains(svc.Tags, strings.TrimPrefix(entry, "tag:"))
}

func (n *naive) decide(r Request) Decision {
	var fail *grant
	var failErr error
	for _, g := range n.p.grants {
		if !slices.ContainsFunc(g.srcRaw, func(s str) bool { return n.srcMatch(s.s, &r.Src) }) {
			continue
		}
		if !slices.ContainsFunc(g.dstRaw, func(s str) bool { return n.dstMatch(s.s, &r.Dst) }) {
			continue
		}
		if r.Kind < 0 || r.Kind >= numKinds || !slices.ContainsFunc(g.names[r.Kind].raw, func(p string) bool { return n.glob(p, r.Name) }) {
			continue
		}
		if g.prg != nil {
			args := r.Args
			if args == nil {
				args = map[string]any{}
			}
			tags := r.Src.Tags
			if tags == nil {
				tags = []string{}
			}
			out, _, err := g.prg.Eval(map[string]any{
				"args": args, "tool": r.Name, "dst": r.Dst.Name, "kind": r.Kind.String(),
				"src": map[string]any{"name": r.Src.Name, "id": r.Src.ID, "tags": tags},
			})
			if err != nil || out.Value() != true {
				if fail == nil {
					fail, failErr = g, err
				}
				continue
			}
		}
		return Decision{Allow: true, Reason: "grant at " + g.ref.String(), Grant: &g.ref}
	}
	if fail != nil {
		if failErr != nil {
			return Decision{Reason: "grant at " + fail.ref.String() + ": when condition error: " + failErr.Error(), Grant: &fail.ref}
		}
		return Decision{Reason: "grant at " + fail.ref.String() + ": when condition false", Grant: &fail.ref}
	}
	return Decision{Reason: ReasonDefaultDeny}
}

// regexpGlob is an independent implementation of the glob rules, for the
// property tests: `*` is `.*`, `?` is one character, the rest is literal.
func regexpGlob(pat, s string) bool {
	if re, ok := globRegexps.Load(pat); ok {
		return re.(*regexp.Regexp).MatchString(s)
	}
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for _, r := range pat {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`)$`)
	re := regexp.MustCompile(b.String())
	globRegexps.Store(pat, re)
	return re.MatchString(s)
}

var globRegexps sync.Map

func sameDecision(a, b Decision) bool {
	if a.Allow != b.Allow || a.Reason != b.Reason || (a.Grant == nil) != (b.Grant == nil) {
		return false
	}
	return a.Grant == nil || *a.Grant == *b.Grant
}

func TestCompiledAgreesWithNaiveOnRandomRequests(t *testing.T) {
	seen := map[string]int{}
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 42))
		g := genConfig{services: 12, nodes: 20, tags: 6, svcTags: 3, groups: 5, grants: 60, whenShare: 0.3}
		p, err := Parse("gen.hujson", g.generate(rng))
		if err != nil {
			t.Fatalf("seed %d: generated policy does not parse: %v", seed, err)
		}
		ref := &naive{p: p, glob: regexpGlob}
		for range 2000 {
			r := g.request(rng)
			got, want := p.Decide(r), ref.decide(r)
			switch {
			case got.Allow:
				seen["allow"]++
			case got.Grant == nil:
				seen["default deny"]++
			case strings.Contains(got.Reason, "error"):
				seen["when error"]++
			default:
				seen["when false"]++
			}
			if !sameDecision(got, want) {
				t.Fatalf("seed %d: %v args %v:\ncompiled: %+v\n   naive: %+v", seed, r, r.Args, got, want)
			}
			if got.Allow != p.Visible(r) && got.Allow {
				t.Fatalf("seed %d: %v allowed but not visible", seed, r)
			}
		}
	}
	// The comparison only means something if every outcome occurred.
	for _, k := range []string{"allow", "default deny", "when error", "when false"} {
		if seen[k] < 20 {
			t.Errorf("only %d decisions of kind %q: %v", seen[k], k, seen)
		}
	}
	t.Logf("outcomes: %v", seen)
}

// genConfig generates realistic synthetic policies: services with tags, nodes
// in groups, tagged bots, grants with globbed tools, resources and prompts,
// some of them with conditions.
type genConfig struct {
	services, nodes, tags, svcTags, groups, grants int
	whenShare                                      float64
}

var (
	verbs = []string{"read", "write", "list", "delete", "search", "get", "create", "update"}
	nouns = []string{"chart", "patient", "invoice", "order", "note", "report", "lab", "image"}
	whens = []string{
		"args.amount < 100",
		"src.name.startsWith('ward')",
		"'bot-1' in src.tags",
		"tool.startsWith('read') && dst != 'svc-0'",
		"args.limit <= 10",
	}
)

func (g genConfig) svcTagsOf(i int) []string {
	if i%2 == 1 {
		return nil
	}
	tags := []string{fmt.Sprintf("tier-%d", i%g.svcTags)}
	if i%3 == 0 {
		tags = append(tags, fmt.Sprintf("tier-%d", (i/3)%g.svcTags))
	}
	return tags
}

func (g genConfig) nodeName(i int) string {
	if i%3 == 0 {
		return fmt.Sprintf("ward-%d", i)
	}
	return fmt.Sprintf("node-%d", i)
}

func quoteAll(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

func (g genConfig) toolGlob(rng *rand.Rand) string {
	v, n := verbs[rng.IntN(len(verbs))], nouns[rng.IntN(len(nouns))]
	switch rng.IntN(5) {
	case 0:
		return v + "_*"
	case 1:
		return "*_" + n
	case 2:
		return v + "_" + n[:len(n)-1] + "?"
	default:
		return v + "_" + n
	}
}

func (g genConfig) generate(rng *rand.Rand) []byte {
	var b strings.Builder
	b.WriteString("{\n  // generated\n  \"groups\": {\n    \"group:admins\": [\"node:root\"],\n")
	for i := range g.groups {
		var m []string
		for j := range 1 + rng.IntN(8) {
			m = append(m, "node:"+g.nodeName((i*7+j*3)%g.nodes))
		}
		m = append(m, fmt.Sprintf("tag:bot-%d", i%g.tags))
		if i > 0 && rng.IntN(3) == 0 {
			m = append(m, fmt.Sprintf("group:g%d", rng.IntN(i)))
		}
		if rng.IntN(5) == 0 {
			m = append(m, fmt.Sprintf("spiffe://example.org/node/ward-%d*", rng.IntN(max(1, g.nodes/20))))
		}
		fmt.Fprintf(&b, "    \"group:g%d\": [%s],\n", i, quoteAll(m))
	}
	b.WriteString("  },\n  \"tagOwners\": {\n")
	for i := range g.tags {
		fmt.Fprintf(&b, "    \"tag:bot-%d\": [\"group:admins\"],\n", i)
	}
	for i := range g.svcTags {
		fmt.Fprintf(&b, "    \"tag:tier-%d\": [\"group:admins\"],\n", i)
	}
	b.WriteString("  },\n  \"grants\": [\n")
	for i := range g.grants {
		var src []string
		for range 1 + rng.IntN(2) {
			switch x := rng.IntN(100); {
			case x < 40:
				src = append(src, fmt.Sprintf("group:g%d", rng.IntN(g.groups)))
			case x < 65:
				src = append(src, "node:"+g.nodeName(rng.IntN(g.nodes)))
			case x < 85:
				src = append(src, fmt.Sprintf("tag:bot-%d", rng.IntN(g.tags)))
			case x < 97:
				// Patterns cover a few nodes each, as a prefix naming a
				// site or a ward would.
				src = append(src, fmt.Sprintf("spiffe://example.org/node/%s*", []string{"ward-", "node-1", "node-?"}[rng.IntN(3)]+fmt.Sprint(rng.IntN(max(1, g.nodes/20)))))
			default:
				src = append(src, "*")
			}
		}
		var dst []string
		if rng.IntN(20) == 0 {
			dst = append(dst, fmt.Sprintf("tag:tier-%d", rng.IntN(g.svcTags)))
		} else {
			dst = append(dst, fmt.Sprintf("svc:svc-%d", (i+rng.IntN(3))%g.services))
		}
		fmt.Fprintf(&b, "    {\"src\": [%s], \"dst\": [%s]", quoteAll(src), quoteAll(dst))
		var tools []string
		for range 1 + rng.IntN(3) {
			tools = append(tools, g.toolGlob(rng))
		}
		fmt.Fprintf(&b, ", \"tools\": [%s]", quoteAll(tools))
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&b, ", \"resources\": [\"file:///data/%s/*\"]", nouns[rng.IntN(len(nouns))])
		}
		if rng.IntN(6) == 0 {
			fmt.Fprintf(&b, ", \"prompts\": [\"summar?\", \"triage_*\"]")
		}
		if rng.Float64() < g.whenShare {
			fmt.Fprintf(&b, ", \"when\": %q", whens[rng.IntN(len(whens))])
		}
		b.WriteString("},\n")
	}
	b.WriteString("  ],\n}\n")
	return []byte(b.String())
}

func (g genConfig) request(rng *rand.Rand) Request {
	var r Request
	switch x := rng.IntN(10); {
	case x == 0: // unknown identity
		r.Src = Identity{Name: "stranger", ID: "spiffe://other.org/node/stranger"}
	case x == 1: // SPIFFE ID only
		n := g.nodeName(rng.IntN(g.nodes))
		r.Src = Identity{ID: "spiffe://example.org/node/" + n}
	default:
		n := g.nodeName(rng.IntN(g.nodes))
		r.Src = Identity{Name: n, ID: "spiffe://example.org/node/" + n}
	}
	for range rng.IntN(3) {
		r.Src.Tags = append(r.Src.Tags, fmt.Sprintf("bot-%d", rng.IntN(g.tags+1)))
	}
	s := rng.IntN(g.services + 1) // one unknown service
	r.Dst = Service{Name: fmt.Sprintf("svc-%d", s), Tags: g.svcTagsOf(s)}
	r.Kind = Kind(rng.IntN(int(numKinds)))
	switch r.Kind {
	case KindTool:
		r.Name = verbs[rng.IntN(len(verbs))] + "_" + nouns[rng.IntN(len(nouns))]
	case KindResource:
		r.Name = "file:///data/" + nouns[rng.IntN(len(nouns))] + "/x.json"
	case KindPrompt:
		r.Name = []string{"summary", "summarize", "triage_ward", "other"}[rng.IntN(4)]
	}
	if rng.IntN(4) != 0 {
		r.Args = map[string]any{"amount": float64(rng.IntN(200)), "limit": float64(rng.IntN(20))}
	}
	return r
}

func TestGlobMatchesLikeRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alpha := []string{"a", "b", "_", "é", "*", "?"}
	for range 20000 {
		var pat, s strings.Builder
		for range rng.IntN(7) {
			pat.WriteString(alpha[rng.IntN(len(alpha))])
		}
		for range rng.IntN(8) {
			s.WriteString(alpha[rng.IntN(4)])
		}
		gl, err := compileGlob(pat.String())
		if err != nil {
			continue
		}
		if got, want := gl.match(s.String()), regexpGlob(pat.String(), s.String()); got != want {
			t.Fatalf("glob %q on %q = %v, want %v", pat.String(), s.String(), got, want)
		}
	}
}
