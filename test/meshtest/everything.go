package meshtest

import (
	"os"
	"os/exec"
	"testing"
)

// EverythingBin finds @modelcontextprotocol/server-everything, the real MCP
// server from npm that the tests use. Without it a test skips, except in
// CI, where .ci/run installs it and the test must run.
func EverythingBin(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("mcp-server-everything")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mcp-server-everything is not installed; .ci/run installs it with npm")
		}
		t.Skip("mcp-server-everything not installed (npm install -g @modelcontextprotocol/server-everything)")
	}
	return p
}
