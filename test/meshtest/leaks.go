package meshtest

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// RunWithLeakCheck runs the package's tests and then fails the run if
// goroutines started by mcpmesh code are still alive: every goroutine must
// have an owner that stops it (STYLE rule 10). Use it from TestMain.
func RunWithLeakCheck(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	var leaked []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked = leakedGoroutines()
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d goroutines leaked by the tests:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
		return 1
	}
	return 0
}

var ownCode = regexp.MustCompile(`github\.com/mcpmesh/mcpmesh/|golang\.zx2c4\.com/wireguard|gvisor\.dev/`)

// leakedGoroutines lists the stacks of goroutines that run code of this
// module, wireguard-go or gVisor, other than the test runner itself.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "RunWithLeakCheck") || strings.Contains(g, "testing.(*M).") || strings.Contains(g, "leakedGoroutines") {
			continue
		}
		if ownCode.MatchString(g) {
			out = append(out, g)
		}
	}
	return out
}
