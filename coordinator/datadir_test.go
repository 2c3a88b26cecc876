package coordinator_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestDataDirOthersCanChangeIsRefused: whoever can write the data
// directory can rename their own CA and netmap keys over the trust
// domain's, and so control the mesh. init refuses such a directory, and so
// does run, before trusting any key in it.
func TestDataDirOthersCanChangeIsRefused(t *testing.T) {
	loose := meshtest.SharedDir(t)
	err := coordinator.Init(loose, "test.mcpmesh", time.Now())
	if err == nil || !strings.Contains(err.Error(), "can be written by other users") || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("init in a world-writable directory: %v", err)
	}
	if entries, _ := os.ReadDir(loose); len(entries) != 0 {
		t.Fatalf("init wrote %d files into it", len(entries))
	}

	dir := filepath.Join(t.TempDir(), "coord")
	if err := coordinator.Init(dir, "test.mcpmesh", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770); err != nil { // someone loosened it since
		t.Fatal(err)
	}
	if _, err := coordinator.Open(context.Background(), dir, coordinator.Config{}); err == nil || !strings.Contains(err.Error(), "cannot be trusted") {
		t.Fatalf("run on a group-writable data directory: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := coordinator.Open(context.Background(), dir, coordinator.Config{})
	if err != nil {
		t.Fatalf("run once it is private again: %v", err)
	}
	defer srv.Close()
	// The store (policy, nodes, audit) is owner-only whatever the umask.
	for _, f := range []string{"coordinator.db", "coordinator.db-wal"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", f, perm)
		}
	}
}
