package meshtest

import (
	"os"
	"path/filepath"
	"testing"
)

// SharedDir is a new directory that every user of the host may write (mode
// 0777 whatever the umask), as one made under /tmp by someone else would
// be: the place a test hands a daemon to show it refuses to keep secrets
// there.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}
