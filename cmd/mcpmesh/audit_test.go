package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/node"
)

// `audit digest` prints what a serving node's audit event records for the
// given arguments, with the node's key: the way to check a call's
// arguments, which the event never holds.
func TestAuditDigestMatchesTheNodesEvents(t *testing.T) {
	state := t.TempDir()
	keyHex := strings.Repeat("ab", 32)
	if err := os.WriteFile(filepath.Join(state, node.DigestKeyFile), []byte(keyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := node.ReadDigestKey(filepath.Join(state, node.DigestKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := mcp.ArgsDigest(key, []byte(`{"patient":"p-17","n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// Key order and spacing do not matter.
	out, errOut, code := runMain(t, "audit", "digest", "--state", state, `{ "n": 1, "patient": "p-17" }`)
	if code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("audit digest: %q %q (exit %d), want %s", out, errOut, code, want)
	}
	for _, tc := range []struct {
		args []string
		say  string
	}{
		{[]string{"--state", state, `["p-17"]`}, "must be a JSON object"},
		{[]string{"--state", state, `{"a":1,"a":2}`}, "arguments"},
		{[]string{"--state", t.TempDir(), `{}`}, "audit digest key"},
		{[]string{"--state", state}, ""},
	} {
		_, errOut, code := runMain(t, append([]string{"audit", "digest"}, tc.args...)...)
		if code == 0 || !strings.Contains(errOut, tc.say) {
			t.Errorf("audit digest %q: exit %d, %q; want an error saying %q", tc.args, code, errOut, tc.say)
		}
	}
}
