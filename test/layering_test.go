// Package test holds repository-wide checks; the multi-node harnesses are
// in its sub-packages.
package test

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/mcpmesh/mcpmesh/"

// rule says packages under from must not depend (even transitively) on
// packages under any of the forbidden prefixes, unless allowed.
type rule struct {
	from      string
	forbidden []string
	allowed   []string
	why       string
}

var rules = []rule{
	{from: "coordinator/api", forbidden: []string{mod, "golang.zx2c4.com/", "gvisor.dev/", "modernc.org/"}, why: "the wire types are a leaf"},
	{from: "tunnel", forbidden: []string{mod + "mcp", mod + "coordinator", mod + "node", mod + "identity"}, why: "tunnel knows nothing of MCP or the control plane"},
	{from: "mcp", forbidden: []string{mod + "tunnel", mod + "node", mod + "coordinator", "golang.zx2c4.com/", "gvisor.dev/"}, allowed: []string{mod + "coordinator/api"}, why: "mcp knows nothing of WireGuard; it gets a listener and a who-is function"},
	{from: "node", forbidden: []string{mod + "coordinator"}, allowed: []string{mod + "coordinator/api"}, why: "the node imports only coordinator/api from the coordinator"},
	{from: "coordinator", forbidden: []string{mod + "node", mod + "cmd"}, why: "the coordinator never imports the node"},
	{from: "identity", forbidden: []string{mod + "coordinator", mod + "node", mod + "tunnel", mod + "mcp"}, why: "identity is a library below the daemons"},
	{from: "mcp/policy", forbidden: []string{mod}, why: "the policy language stands alone"},
	{from: "platform", forbidden: []string{mod}, why: "platform holds OS specifics below everything else"},
}

func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") || (strings.HasSuffix(prefix, "/") && strings.HasPrefix(pkg, prefix))
}

// TestImportLayering keeps DESIGN.md rule 7 true: dependencies point down.
func TestImportLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		if strings.HasPrefix(pkg, mod+"cmd") || strings.HasPrefix(pkg, mod+"test") {
			continue
		}
		for _, r := range rules {
			if !under(pkg, mod+r.from) {
				continue
			}
			// A more specific rule (coordinator/api under coordinator)
			// governs its own packages.
			if r.from == "coordinator" && under(pkg, mod+"coordinator/api") {
				continue
			}
			checked++
		deps:
			for _, d := range deps {
				for _, a := range r.allowed {
					if under(d, a) {
						continue deps
					}
				}
				for _, f := range r.forbidden {
					if under(d, strings.TrimSuffix(f, "/")) || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
						if under(d, pkg) {
							continue
						}
						t.Errorf("%s depends on %s: %s", strings.TrimPrefix(pkg, mod), d, r.why)
					}
				}
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d packages checked; is the module path right?", checked)
	}
}
