package policy_test

import (
	"fmt"

	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

const designExample = `{
  // Who may use the EHR.
  "groups":  { "group:clinical-agents": ["node:ward-7-laptop", "tag:triage-bot"],
               "group:admins": ["node:admin-laptop"] },
  "tagOwners": { "tag:ehr": ["group:admins"], "tag:triage-bot": ["group:admins"],
                 "tag:billing": ["group:admins"] },
  "grants": [
    { "src": ["group:clinical-agents"], "dst": ["svc:ehr"],
      "tools": ["read_*", "search_patients"] },
    { "src": ["tag:billing"], "dst": ["svc:ehr"], "tools": ["get_invoice"],
      "when": "args.amount < 10000" },
  ],
  "tests": [
    { "src": "node:ward-7-laptop", "dst": "svc:ehr",
      "allow": ["read_chart"], "deny": ["delete_chart"] },
    { "src": "node:acct-1", "srcTags": ["tag:billing"], "dst": "svc:ehr",
      "args": {"amount": 12}, "allow": ["get_invoice"] },
  ],
}`

func Example() {
	p, err := policy.Parse("acl.hujson", []byte(designExample))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Tests(), "tests passed")
	laptop := policy.Identity{Name: "ward-7-laptop", ID: "spiffe://example.org/node/ward-7-laptop"}
	ehr := policy.Service{Name: "ehr"}
	fmt.Println(p.Explain(policy.Request{Src: laptop, Dst: ehr, Name: "read_chart"}))
	fmt.Println(p.Explain(policy.Request{Src: laptop, Dst: ehr, Name: "delete_chart"}))
	billing := policy.Identity{Name: "acct-1", Tags: []string{"billing"}}
	fmt.Println(p.Explain(policy.Request{Src: billing, Dst: ehr, Name: "get_invoice", Args: map[string]any{"amount": 20000.0}}))
	fmt.Println(p.Explain(policy.Request{Src: billing, Dst: ehr, Name: "get_invoice"}))
	// Output:
	// 2 tests passed
	// allow: grant at acl.hujson:8:5
	// deny: no grant matches (default deny)
	// deny: grant at acl.hujson:10:5: when condition false
	// deny: grant at acl.hujson:10:5: when condition error: no such key: amount
}
