package policy

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestForServicesDecidesTheSameForItsServicesAndDeniesOthers(t *testing.T) {
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 7))
		g := genConfig{services: 10, nodes: 20, tags: 5, svcTags: 3, groups: 6, grants: 80, whenShare: 0.3}
		full, err := Parse("gen.hujson", g.generate(rng))
		if err != nil {
			t.Fatal(err)
		}
		hosted := []Service{{Name: "svc-1", Tags: g.svcTagsOf(1)}, {Name: "svc-4", Tags: g.svcTagsOf(4)}}
		doc, err := full.ForServices(hosted)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(doc) {
			t.Fatalf("ForServices output is not JSON:\n%s", doc)
		}
		cut, err := Parse("node.json", doc)
		if err != nil {
			t.Fatalf("ForServices output does not parse: %v\n%s", err, doc)
		}
		if cut.Grants() >= full.Grants() || cut.Grants() == 0 {
			t.Errorf("cut policy has %d of %d grants", cut.Grants(), full.Grants())
		}
		for range 3000 {
			r := g.request(rng)
			ours := r.Dst.Name == "svc-1" || r.Dst.Name == "svc-4"
			want := full.Decide(r)
			got := cut.Decide(r)
			if ours {
				// Index counts grants in the document each policy was
				// compiled from; the position in the admin's file must agree.
				if got.Allow != want.Allow || got.Reason != want.Reason || (got.Grant == nil) != (want.Grant == nil) ||
					(got.Grant != nil && got.Grant.String() != want.Grant.String()) {
					t.Fatalf("seed %d: %v: cut %+v, full %+v", seed, r, got, want)
				}
				continue
			}
			// Another service: denied, unless it shares a tag and thus grants
			// with a hosted one; a node never serves it, so only check the
			// untagged case.
			if len(r.Dst.Tags) == 0 && got.Allow {
				t.Fatalf("seed %d: %v allowed by the cut policy", seed, r)
			}
		}
	}
}

func TestForServicesExpandsGroupsAndKeepsOwners(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(tablePolicy))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := p.ForServices([]Service{{Name: "ehr"}})
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	for _, want := range []string{`"node:ward-7"`, `"node:night-1"`, `"spiffe://hospital.org/node/locum-*"`, `"tag:triage"`, `"origin": "acl.hujson:12:5"`, `"args.amount < 10000"`, `"tag:billing": [`} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %s:\n%s", want, s)
		}
	}
	for _, unwanted := range []string{"group:clinical", "svc:wiki", "svc:status", "tag:phi", "tests"} {
		if strings.Contains(s, unwanted) {
			t.Errorf("output contains %s:\n%s", unwanted, s)
		}
	}
	cut, err := Parse("node.json", doc)
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Src: Identity{Name: "night-1"}, Dst: Service{Name: "ehr"}, Name: "read_chart"}
	if got := cut.Explain(r); got != "allow: grant at acl.hujson:12:5" {
		t.Errorf("cut policy explains %q; the serving node must name the admin's grant", got)
	}
	// A cut of a cut is the same document.
	again, err := cut.ForServices([]Service{{Name: "ehr"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != s {
		t.Errorf("ForServices is not idempotent:\n%s\nvs\n%s", again, s)
	}
	none, err := p.ForServices(nil)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := Parse("none.json", none)
	if err != nil {
		t.Fatalf("empty cut does not parse: %v\n%s", err, none)
	}
	if empty.Decide(r).Allow {
		t.Error("empty cut allows")
	}
}
