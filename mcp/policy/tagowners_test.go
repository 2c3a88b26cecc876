package policy

import "testing"

const ownersPolicy = `{
  "groups": {
    "group:admins": ["node:alice", "group:ops"],
    "group:ops":    ["spiffe://td/node/ops-*", "tag:ops"],
  },
  "tagOwners": {
    "tag:ehr":    ["group:admins", "tag:server"],
    "tag:server": ["node:alice"],
    "tag:ops":    ["node:alice"],
    "tag:nobody": [],
  },
}`

func TestMayUseTagMatchesOwnersLikeSources(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(ownersPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  Identity
		tag  string
		want bool
	}{
		{"owner by node name, through a group", Identity{Name: "alice"}, "ehr", true},
		{"owner by a tag the node carries", Identity{Name: "srv", Tags: []string{"server"}}, "ehr", true},
		{"owner by a SPIFFE pattern in a nested group", Identity{Name: "ops-1", ID: "spiffe://td/node/ops-1"}, "ehr", true},
		{"owner by a tag in a nested group", Identity{Name: "x", Tags: []string{"ops"}}, "ehr", true},
		{"a node no owner names", Identity{Name: "bob", ID: "spiffe://td/node/bob"}, "ehr", false},
		{"carrying the tag itself is not owning it", Identity{Name: "bob", Tags: []string{"ehr"}}, "ehr", false},
		{"owners of one tag do not own another", Identity{Name: "srv", Tags: []string{"server"}}, "server", false},
		{"a tag with an empty owner list", Identity{Name: "alice"}, "nobody", false},
		{"a tag missing from tagOwners", Identity{Name: "alice"}, "phi", false},
		{"the tag is given without its prefix", Identity{Name: "alice"}, "tag:ehr", false},
	} {
		if got := p.MayUseTag(tc.src, tc.tag); got != tc.want {
			t.Errorf("%s: MayUseTag(%+v, %q) = %v, want %v", tc.name, tc.src, tc.tag, got, tc.want)
		}
	}
}

// TestMayUseTagSurvivesForServices: the excerpt a serving node gets keeps
// the owners of the tags it uses, and they mean the same there.
func TestMayUseTagSurvivesForServices(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(`{
  "groups": {"group:admins": ["node:alice"]},
  "tagOwners": {"tag:ehr": ["group:admins"]},
  "grants": [{"src": ["node:bob"], "dst": ["tag:ehr"], "tools": ["read"]}],
}`))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := p.ForServices([]Service{{Name: "ehr", Tags: []string{"ehr"}}})
	if err != nil {
		t.Fatal(err)
	}
	cut, err := Parse("node.json", doc)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	for _, pol := range []*Policy{p, cut} {
		if !pol.MayUseTag(Identity{Name: "alice"}, "ehr") || pol.MayUseTag(Identity{Name: "bob"}, "ehr") {
			t.Errorf("%s: owners of tag:ehr changed", pol.File())
		}
	}
}
