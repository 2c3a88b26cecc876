//go:build unix

package identity

import (
	"fmt"
	"os"
	"syscall"
)

// CheckPrivateDir refuses a directory that another user could change: one
// not owned by this process's user, or writable by its group or by all.
// Such a user cannot read the 0600 keys inside, but can rename files of
// their own over them (a CA key, a node's identity, a socket), so a
// directory that holds secrets must be private before anything in it is
// trusted. The error says how to fix it.
func CheckPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("directory %s can be written by other users (mode %#o); make it private with `chmod 700 %s`", dir, perm, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s belongs to uid %d, not to this user (uid %d); use a directory of your own", dir, st.Uid, os.Geteuid())
	}
	return nil
}
