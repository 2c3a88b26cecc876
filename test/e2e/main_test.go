// Package e2e proves the mesh end to end: a real coordinator and real nodes
// with userspace WireGuard tunnels in one process, over loopback.
package e2e

import (
	"os"
	"testing"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

func TestMain(m *testing.M) { os.Exit(meshtest.RunWithLeakCheck(m)) }
