package policy

import (
	"strings"
	"testing"
)

const tablePolicy = `{
  "groups": {
    "group:admins": ["node:root"],
    "group:clinical": ["node:ward-7", "tag:triage", "group:night"],
    "group:night": ["node:night-1", "spiffe://hospital.org/node/locum-*"],
  },
  "tagOwners": {
    "tag:triage": ["group:admins"], "tag:billing": ["group:admins"],
    "tag:phi": ["group:admins"], "tag:ops": ["tag:billing"],
  },
  "grants": [
    {"src": ["group:clinical"], "dst": ["svc:ehr"], "tools": ["read_*", "search_patients"]},
    {"src": ["tag:billing"], "dst": ["svc:ehr"], "tools": ["get_invoice"], "when": "args.amount < 10000"},
    {"src": ["node:ward-7"], "dst": ["tag:phi"], "resources": ["file:///charts/*.json"], "prompts": ["summar?"]},
    {"src": ["spiffe://hospital.org/node/*"], "dst": ["svc:wiki"], "tools": ["*"]},
    {"src": ["*"], "dst": ["svc:status"], "tools": ["ping"]},
    {"src": ["node:ward-7"], "dst": ["svc:ehr"], "tools": ["write_note"], "when": "src.name == 'ward-7' && dst == 'ehr' && tool == 'write_note' && kind == 'tool'"},
  ],
}`

func TestDecideTable(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(tablePolicy))
	if err != nil {
		t.Fatal(err)
	}
	ward := Identity{Name: "ward-7", ID: "spiffe://hospital.org/node/ward-7"}
	locum := Identity{Name: "locum-3", ID: "spiffe://hospital.org/node/locum-3"}
	bot := Identity{Name: "bot-1", Tags: []string{"triage"}}
	biller := Identity{Name: "acct", Tags: []string{"billing"}}
	stranger := Identity{Name: "stranger", ID: "spiffe://evil.org/node/ward-7"}
	ehr := Service{Name: "ehr"}
	charts := Service{Name: "charts", Tags: []string{"phi"}}
	tests := []struct {
		name string
		r    Request
		want string
	}{
		{"node via group, tool glob", Request{Src: ward, Dst: ehr, Name: "read_chart"}, "allow: grant at acl.hujson:12:5"},
		{"tool literal", Request{Src: ward, Dst: ehr, Name: "search_patients"}, "allow: grant at acl.hujson:12:5"},
		{"tool names are matched whole", Request{Src: ward, Dst: ehr, Name: "search_patients_all"}, "deny: no grant matches (default deny)"},
		{"default deny", Request{Src: ward, Dst: ehr, Name: "delete_chart"}, "deny: no grant matches (default deny)"},
		{"tag via group", Request{Src: bot, Dst: ehr, Name: "read_x"}, "allow: grant at acl.hujson:12:5"},
		{"spiffe pattern via nested group", Request{Src: locum, Dst: ehr, Name: "read_x"}, "allow: grant at acl.hujson:12:5"},
		{"node name alone does not satisfy a spiffe pattern", Request{Src: Identity{Name: "locum-3"}, Dst: ehr, Name: "read_x"}, "deny: no grant matches (default deny)"},
		{"unknown identity", Request{Src: stranger, Dst: ehr, Name: "read_x"}, "deny: no grant matches (default deny)"},
		{"empty identity", Request{Dst: ehr, Name: "read_x"}, "deny: no grant matches (default deny)"},
		{"unknown service", Request{Src: ward, Dst: Service{Name: "nope"}, Name: "read_x"}, "deny: no grant matches (default deny)"},
		{"when true", Request{Src: biller, Dst: ehr, Name: "get_invoice", Args: map[string]any{"amount": 9999.0}}, "allow: grant at acl.hujson:13:5"},
		{"when true with int args", Request{Src: biller, Dst: ehr, Name: "get_invoice", Args: map[string]any{"amount": 3}}, "allow: grant at acl.hujson:13:5"},
		{"when false", Request{Src: biller, Dst: ehr, Name: "get_invoice", Args: map[string]any{"amount": 10000.0}}, "deny: grant at acl.hujson:13:5: when condition false"},
		{"when eval error", Request{Src: biller, Dst: ehr, Name: "get_invoice"}, "deny: grant at acl.hujson:13:5: when condition error: no such key: amount"},
		{"when type error", Request{Src: biller, Dst: ehr, Name: "get_invoice", Args: map[string]any{"amount": "lots"}}, "deny: grant at acl.hujson:13:5: when condition error: no such overload"},
		{"when sees src, dst, tool and kind", Request{Src: ward, Dst: ehr, Name: "write_note"}, "allow: grant at acl.hujson:17:5"},
		{"when false for another node", Request{Src: Identity{Name: "ward-7x"}, Dst: ehr, Name: "write_note"}, "deny: no grant matches (default deny)"},
		{"service tag resource glob", Request{Src: ward, Dst: charts, Kind: KindResource, Name: "file:///charts/a/b.json"}, "allow: grant at acl.hujson:14:5"},
		{"resource glob miss", Request{Src: ward, Dst: charts, Kind: KindResource, Name: "file:///etc/passwd"}, "deny: no grant matches (default deny)"},
		{"prompt ? glob", Request{Src: ward, Dst: charts, Kind: KindPrompt, Name: "summary"}, "allow: grant at acl.hujson:14:5"},
		{"prompt ? is one character", Request{Src: ward, Dst: charts, Kind: KindPrompt, Name: "summ"}, "deny: no grant matches (default deny)"},
		{"tools do not grant prompts", Request{Src: ward, Dst: ehr, Kind: KindPrompt, Name: "read_x"}, "deny: no grant matches (default deny)"},
		{"resources do not grant tools", Request{Src: ward, Dst: charts, Name: "file:///charts/a.json"}, "deny: no grant matches (default deny)"},
		{"spiffe pattern source", Request{Src: locum, Dst: Service{Name: "wiki"}, Name: "anything"}, "allow: grant at acl.hujson:15:5"},
		{"spiffe pattern other trust domain", Request{Src: stranger, Dst: Service{Name: "wiki"}, Name: "anything"}, "deny: no grant matches (default deny)"},
		{"star source", Request{Src: stranger, Dst: Service{Name: "status"}, Name: "ping"}, "allow: grant at acl.hujson:16:5"},
		{"bad kind", Request{Src: stranger, Dst: Service{Name: "status"}, Kind: 7, Name: "ping"}, "deny: unknown request kind 7 (default deny)"},
	}
	ref := &naive{p: p, glob: regexpGlob}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Explain(tt.r)
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("Explain = %q, want %q", got, tt.want)
			}
			d := p.Decide(tt.r)
			if d.Allow != strings.HasPrefix(tt.want, "allow") {
				t.Errorf("Decide.Allow = %v", d.Allow)
			}
			if (d.Grant == nil) != strings.Contains(tt.want, "default deny") {
				t.Errorf("Decide.Grant = %v", d.Grant)
			}
			if tt.r.Kind < numKinds && !sameDecision(d, ref.decide(tt.r)) {
				t.Errorf("naive evaluator disagrees: %+v vs %+v", d, ref.decide(tt.r))
			}
		})
	}
}

func TestFirstGrantInFileIsNamedWhateverTheIndexBucket(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(`{
"groups": {"group:admins": ["node:root"]},
"tagOwners": {"tag:bot": ["group:admins"], "tag:prod": ["group:admins"]},
"grants": [
  {"src": ["spiffe://td/node/a"], "dst": ["tag:prod"], "tools": ["x"], "when": "false"},
  {"src": ["tag:bot"], "dst": ["svc:s"], "tools": ["x"]},
  {"src": ["node:a"], "dst": ["svc:s"], "tools": ["x"]},
  {"src": ["*"], "dst": ["svc:s"], "tools": ["x"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Src: Identity{Name: "a", ID: "spiffe://td/node/a", Tags: []string{"bot"}}, Dst: Service{Name: "s", Tags: []string{"prod"}}, Name: "x"}
	if got := p.Explain(r); got != "allow: grant at acl.hujson:6:3" {
		t.Errorf("got %q", got)
	}
	r.Src.Tags = nil
	if got := p.Explain(r); got != "allow: grant at acl.hujson:7:3" {
		t.Errorf("got %q", got)
	}
	r.Src.Name = ""
	if got := p.Explain(r); got != "allow: grant at acl.hujson:8:3" {
		t.Errorf("got %q", got)
	}
}

func TestCanReach(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(tablePolicy))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src  Identity
		dst  Service
		want bool
	}{
		{Identity{Name: "ward-7"}, Service{Name: "ehr"}, true},
		{Identity{Name: "ward-7"}, Service{Name: "charts", Tags: []string{"phi"}}, true},
		{Identity{Name: "ward-7"}, Service{Name: "charts"}, false},
		{Identity{Name: "acct", Tags: []string{"billing"}}, Service{Name: "ehr"}, true}, // conditions are ignored
		{Identity{Name: "acct", Tags: []string{"billing"}}, Service{Name: "wiki"}, false},
		{Identity{ID: "spiffe://hospital.org/node/x"}, Service{Name: "wiki"}, true},
		{Identity{ID: "spiffe://evil.org/node/x"}, Service{Name: "wiki"}, false},
		{Identity{ID: "spiffe://hospital.org/node/locum-1"}, Service{Name: "ehr"}, true},
		{Identity{Name: "anyone"}, Service{Name: "status"}, true},
		{Identity{Name: "anyone"}, Service{Name: "ehr"}, false},
		{Identity{}, Service{Name: "nope"}, false},
	}
	for _, tt := range tests {
		if got := p.CanReach(tt.src, tt.dst); got != tt.want {
			t.Errorf("CanReach(%+v, %+v) = %v, want %v", tt.src, tt.dst, got, tt.want)
		}
	}
}

func TestVisibleIgnoresConditions(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(tablePolicy))
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Src: Identity{Name: "acct", Tags: []string{"billing"}}, Dst: Service{Name: "ehr"}, Name: "get_invoice"}
	if p.Decide(r).Allow || !p.Visible(r) {
		t.Error("a conditional tool should be listed but not callable without arguments")
	}
	r.Name = "delete_chart"
	if p.Visible(r) {
		t.Error("an ungranted tool is listed")
	}
}

func TestDecideWithoutConditionsDoesNotAllocate(t *testing.T) {
	p, err := Parse("acl.hujson", []byte(tablePolicy))
	if err != nil {
		t.Fatal(err)
	}
	allow := Request{Src: Identity{Name: "bot", Tags: []string{"triage"}, ID: "spiffe://hospital.org/node/bot"}, Dst: Service{Name: "ehr"}, Name: "read_chart"}
	deny := Request{Src: Identity{Name: "stranger"}, Dst: Service{Name: "ehr"}, Name: "read_chart"}
	for _, r := range []Request{allow, deny} {
		if n := testing.AllocsPerRun(100, func() { p.Decide(r) }); n != 0 {
			t.Errorf("Decide(%v) allocates %v times", r, n)
		}
	}
}
