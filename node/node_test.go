package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

func TestStateDirSecretsAndSocketAreOwnerOnly(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	m.AddNode("peer")
	dir := filepath.Join(t.TempDir(), "st")
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	n, err := node.Start(context.Background(), node.Config{StateDir: dir, Coordinator: m.URL, Token: tok, Hostname: "me"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, f := range []string{"wireguard.key", "identity.key", "svid.pem", "node.json", "netmap.json", node.DigestKeyFile, node.SocketName} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %o, want 600", f, perm)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir has mode %o, want 700", fi.Mode().Perm())
	}

	// The LocalAPI answers over the socket, and a second daemon on the
	// same state directory is refused instead of stealing the socket.
	c := localapi.NewClient(filepath.Join(dir, node.SocketName))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) == 1 && st.Peers[0].Name == "peer" && st.Name == "me" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("status never showed the peer: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := node.Start(context.Background(), node.Config{StateDir: dir}); err == nil {
		t.Fatal("a second daemon started on a state directory in use")
	}
}

// TestStateDirOthersCanChangeIsRefused: a state directory another user can
// write (one the operator made under /tmp, say) could have its socket
// replaced or a symlink planted where the daemon writes; the node refuses
// it before writing anything, and says how to fix it.
func TestStateDirOthersCanChangeIsRefused(t *testing.T) {
	dir := meshtest.SharedDir(t)
	_, err := node.Start(context.Background(), node.Config{StateDir: dir, Coordinator: "https://127.0.0.1:1", Token: "x", Hostname: "me"})
	if err == nil || !strings.Contains(err.Error(), "can be written by other users") || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("a world-writable state directory: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the node wrote %d files into it", len(entries))
	}
}
