package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// errorsOf parses src and returns its errors as "LINE:COL: msg".
func errorsOf(t *testing.T, src string) []string {
	t.Helper()
	p, err := Parse("acl.hujson", []byte(src))
	if err == nil {
		if p == nil {
			t.Fatal("Parse returned neither a policy nor an error")
		}
		return nil
	}
	if p != nil {
		t.Fatal("Parse returned a policy and an error")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T is not an ErrorList: %v", err, err)
	}
	var out []string
	for _, e := range list {
		if e.File != "acl.hujson" {
			t.Errorf("error names file %q", e.File)
		}
		out = append(out, fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg))
	}
	return out
}

// owners is a preamble that defines the tags most tests use; it is two lines
// long, so positions in the test sources below start at line 3.
const owners = `{"groups": {"group:admins": ["node:root"]},
"tagOwners": {"tag:bot": ["group:admins"], "tag:prod": ["group:admins"]},
`

func TestParseReportsEveryErrorClassAtItsPosition(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // "LINE:COL: substring of message"
	}{
		{"syntax", "{\n  \"grants\": [\n    {\"src\": }\n]}", []string{"3:13: syntax error"}},
		{"trailing garbage", "{} x", []string{"1:4: syntax error"}},
		{"not an object", "[]", []string{"1:1: policy: expected an object"}},
		{"unknown top-level key", "{\n  \"grant\": []\n}", []string{`2:3: unknown top-level key "grant"`}},
		{"duplicate top-level key", "{\"grants\": [],\n \"grants\": []}", []string{`2:2: duplicate key "grants"`}},
		{"duplicate nested key", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"],
  "tools": ["y"]}]}`, []string{`4:3: duplicate key "tools"`}},
		{"unknown grant key", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tool": ["x"]}]}`,
			[]string{"3:12: grant can never match: it grants no tools", `3:45: grant: unknown key "tool"`}},
		{"wrong type", owners + `"grants": [{"src": "*", "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{"3:12: grant can never match: src is empty", "3:20: src: expected an array"}},
		{"unknown group in grant", owners + `"grants": [{"src": ["group:nope"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{`3:21: unknown group "group:nope"`}},
		{"unknown group in group", `{"groups": {"group:a": ["group:b"]}}`, []string{`1:25: unknown group "group:b"`}},
		{"unknown group as tag owner", `{"tagOwners": {"tag:x": ["group:nope"]}}`, []string{`1:26: unknown group "group:nope"`}},
		{"tag without owner in src", owners + `"grants": [{"src": ["tag:stray"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{`3:21: tag without owner: "tag:stray"`}},
		{"tag without owner in dst", owners + `"grants": [{"src": ["*"], "dst": ["tag:db"], "tools": ["x"]}]}`,
			[]string{`3:35: tag without owner: "tag:db"`}},
		{"tag without owner in group", `{"groups": {"group:a": ["tag:x"]}}`, []string{`1:25: tag without owner: "tag:x"`}},
		{"tag without owner in test", owners + `"grants": [],
"tests": [{"src": "node:a", "srcTags": ["tag:nobody"], "dst": "svc:a", "deny": ["x"]}]}`,
			[]string{`4:41: tag without owner: "tag:nobody"`}},
		{"group cycle", `{"groups": {
  "group:a": ["group:b"],
  "group:b": ["group:c"],
  "group:c": ["group:a"]}}`, []string{"4:15: group cycle: group:a -> group:b -> group:c -> group:a"}},
		{"self cycle", `{"groups": {"group:a": ["node:x", "group:a"]}}`, []string{"1:35: group cycle: group:a -> group:a"}},
		{"bad group key", `{"groups": {"team": []}}`, []string{`1:13: groups key "team": want group:NAME`}},
		{"bad tag owner key", `{"tagOwners": {"bot": []}}`, []string{`1:16: tagOwners key "bot": want tag:NAME`}},
		{"bad source", owners + `"grants": [{"src": ["laptop"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{`3:21: bad source "laptop"`}},
		{"bad destination", owners + `"grants": [{"src": ["*"], "dst": ["ehr"], "tools": ["x"]}]}`,
			[]string{`3:35: bad destination "ehr"`}},
		{"bad name", owners + `"grants": [{"src": ["node:a b"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{`3:21: source "node:a b": bad name`}},
		{"bad glob empty", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": [""]}]}`,
			[]string{`3:55: tools: bad glob "": empty`}},
		{"bad glob double star", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "resources": ["file:///**"]}]}`,
			[]string{`3:59: resources: bad glob "file:///**"`}},
		{"bad glob illegal char", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "prompts": ["a b"]}]}`,
			[]string{`3:57: prompts: bad glob "a b": illegal character ' '`}},
		{"bad spiffe glob", owners + `"grants": [{"src": ["spiffe://td/**"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{`3:21: source: bad glob "spiffe://td/**"`}},
		{"empty src", owners + `"grants": [{"src": [], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{"3:12: grant can never match: src is empty"}},
		{"missing dst", owners + `"grants": [{"src": ["*"], "tools": ["x"]}]}`,
			[]string{"3:12: grant can never match: dst is empty"}},
		{"nothing granted", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": []}]}`,
			[]string{"3:12: grant can never match: it grants no tools, resources or prompts"}},
		{"empty group source", `{"groups": {"group:e": []}, "grants": [{"src": ["group:e"], "dst": ["svc:a"], "tools": ["x"]}]}`,
			[]string{"1:40: grant can never match: src resolves to no identities"}},
		{"cel does not compile", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "args.a <"}]}`,
			[]string{"3:78: when: CEL: Syntax error"}},
		{"cel undeclared", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "size(nope) > 1"}]}`,
			[]string{"3:75: when: CEL: undeclared reference to 'nope'"}},
		{"cel with escapes points at the string", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "tool == \"a\" && nope"}]}`,
			[]string{"3:69: when: CEL: undeclared reference to 'nope'"}},
		{"cel not a bool", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "tool + 'x'"}]}`,
			[]string{"3:69: when: not a bool: condition has type string"}},
		{"cel dyn is not a bool", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": "args.flag"}]}`,
			[]string{"3:69: when: not a bool: condition has type dyn"}},
		{"cel empty", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "when": " "}]}`,
			[]string{"3:69: when: empty condition"}},
		{"test missing fields", owners + `"tests": [{"allow": []}]}`,
			[]string{"3:11: test: missing src", "3:11: test: missing dst", "3:11: test: no expectations"}},
		{"test bad src", owners + `"tests": [{"src": "laptop", "dst": "svc:a", "deny": ["x"]}]}`,
			[]string{`3:19: test src "laptop": want node:NAME or a SPIFFE ID`}},
		{"test unknown key", owners + `"tests": [{"src": "node:a", "dst": "svc:a", "deny": ["x"], "alow": ["y"]}]}`,
			[]string{`3:60: test: unknown key "alow"`}},
		{"bad origin", owners + `"grants": [{"src": ["*"], "dst": ["svc:a"], "tools": ["x"], "origin": "nowhere"}]}`,
			[]string{`3:71: bad origin`}},
		{"errors are sorted and all reported", `{"grants": [
  {"src": ["group:x"], "dst": ["svc:a"], "tools": ["y"]},
  {"src": ["*"], "dst": ["tag:t"], "tools": ["**"]}],
 "bogus": 1}`, []string{`2:12: unknown group "group:x"`, `3:26: tag without owner`, `3:46: tools: bad glob "**"`, `4:2: unknown top-level key "bogus"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := errorsOf(t, tt.src)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				at, msg, _ := strings.Cut(w, ": ")
				if !strings.HasPrefix(got[i], at+": ") || !strings.Contains(got[i], msg) {
					t.Errorf("error %d = %q, want at %s containing %q", i, got[i], at, msg)
				}
			}
		})
	}
}

func TestEmbeddedTestsFailWithTheTestAndExpectation(t *testing.T) {
	src := owners + `"grants": [
  {"src": ["node:a"], "dst": ["svc:s"], "tools": ["read_*"]},
  {"src": ["node:a"], "dst": ["svc:s"], "tools": ["pay"], "when": "args.amount < 10"}],
"tests": [
  {"src": "node:a", "dst": "svc:s", "allow": ["read_x", "write_x"], "deny": ["read_y"]},
  {"src": "node:a", "dst": "svc:s", "args": {"amount": 50}, "allow": ["pay"]},
  {"src": "node:a", "dst": "svc:s", "deny": ["x"], "allowResources": ["file:///a"], "allowPrompts": ["p"]}]}`
	got := errorsOf(t, src)
	want := []string{
		`7:57: test at 7:3 failed: tool "write_x" should be allowed, but is denied: no grant matches (default deny)`,
		`7:78: test at 7:3 failed: tool "read_y" should be denied, but is allowed by grant at acl.hujson:4:3`,
		`8:71: test at 8:3 failed: tool "pay" should be allowed, but is denied: grant at acl.hujson:5:3: when condition false`,
		`9:71: test at 9:3 failed: resource "file:///a" should be allowed`,
		`9:102: test at 9:3 failed: prompt "p" should be allowed`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestEmbeddedTestsPassAndAreCounted(t *testing.T) {
	src := owners + `"grants": [
  {"src": ["node:a"], "dst": ["svc:s"], "tools": ["read_*"], "resources": ["file:///pub/*"], "prompts": ["summar?"]},
  {"src": ["tag:bot"], "dst": ["tag:prod"], "tools": ["pay"], "when": "args.amount < 10 && 'bot' in src.tags"}],
"tests": [
  {"src": "node:a", "dst": "svc:s", "allow": ["read_x"], "deny": ["write_x"],
   "allowResources": ["file:///pub/a"], "denyResources": ["file:///etc/passwd"],
   "allowPrompts": ["summary"], "denyPrompts": ["summaries"]},
  {"src": "spiffe://td/node/b", "srcTags": ["tag:bot"], "dst": "svc:pay", "dstTags": ["tag:prod"],
   "args": {"amount": 5}, "allow": ["pay"]},
  {"src": "node:b", "srcTags": ["tag:bot"], "dst": "svc:pay", "dstTags": ["tag:prod"],
   "args": {"amount": 50}, "deny": ["pay"]}]}`
	p, err := Parse("acl.hujson", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if p.Tests() != 3 {
		t.Errorf("Tests() = %d, want 3", p.Tests())
	}
	if string(p.Source()) != src {
		t.Error("Source() is not the original text")
	}
}

func TestErrorFormatsAsFileLineCol(t *testing.T) {
	_, err := Parse("x/acl.hujson", []byte(`{"bogus": 1}`))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(*Error) failed on %v", err)
	}
	if got, want := e.Error(), `x/acl.hujson:1:2: unknown top-level key "bogus" (want groups, tagOwners, grants or tests)`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
