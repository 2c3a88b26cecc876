package meshtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RunWithBinary is the TestMain of suites that run the real mcpmesh
// binary: it builds cmd/mcpmesh into a temporary directory, sets *bin to
// its path, runs the tests and removes the directory. It returns the exit
// code for os.Exit.
func RunWithBinary(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "mcpmesh-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, "mcpmesh")
	out, err := exec.Command("go", "build", "-o", *bin, "github.com/mcpmesh/mcpmesh/cmd/mcpmesh").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mcpmesh: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
