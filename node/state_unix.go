//go:build unix

package node

import (
	"fmt"
	"os"
	"syscall"
)

// checkPrivate refuses a state directory that another user could change:
// one not owned by this process's user, or writable by its group or by
// all. Such a user could replace the LocalAPI socket, or plant a symlink
// where the daemon, perhaps as root, then writes.
func checkPrivate(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("node: state directory %s: %w", dir, err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("node: state directory %s can be written by other users (mode %#o); make it private with `chmod 700 %s`", dir, perm, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("node: state directory %s belongs to uid %d, not to this user (uid %d); use a directory of your own (--state)", dir, st.Uid, os.Geteuid())
	}
	return nil
}
