package policy

import (
	"math/rand/v2"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that Parse returns a
// policy or an error and never both, and that an accepted policy can decide,
// explain and cut itself down without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(tablePolicy))
	f.Add([]byte(owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "args.a < 1"}]}`))
	f.Add([]byte(`{"groups": {"group:a": ["group:a"]}}`))
	f.Add([]byte(`{"tests": [{"src": "node:a", "dst": "svc:b", "deny": ["x"], "args": {"k": [1, {"z": null}]}}]}`))
	f.Add([]byte(`{/* c */ "grants": [,]}`))
	f.Add(genConfig{services: 3, nodes: 4, tags: 2, svcTags: 2, groups: 2, grants: 5, whenShare: 0.5}.generate(rand.New(rand.NewPCG(1, 1))))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse("fuzz.hujson", src)
		if (p == nil) == (err == nil) {
			t.Fatalf("Parse returned policy %v and error %v", p != nil, err)
		}
		if p == nil {
			return
		}
		ids := []Identity{{}, {Name: "a", ID: "spiffe://td/node/a", Tags: []string{"bot", "x"}}, {Name: "root"}}
		svcs := []Service{{Name: "a"}, {Name: "b", Tags: []string{"prod", "bot"}}}
		for _, id := range ids {
			for _, svc := range svcs {
				for k := range numKinds {
					for _, name := range []string{"x", "read_chart", "", "file:///a"} {
						r := Request{Src: id, Dst: svc, Kind: k, Name: name, Args: map[string]any{"a": 1.0, "amount": "x"}}
						d := p.Decide(r)
						if d.Allow && !p.Visible(r) {
							t.Fatalf("%v allowed but not visible", r)
						}
						if d.Allow && !p.CanReach(id, svc) {
							t.Fatalf("%v allowed but not reachable", r)
						}
						_ = p.Explain(r)
					}
				}
			}
		}
		doc, err := p.ForServices(svcs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse("cut.json", doc); err != nil {
			t.Fatalf("ForServices output does not parse: %v\n%s", err, doc)
		}
	})
}
