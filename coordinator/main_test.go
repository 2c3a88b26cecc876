package coordinator_test

import (
	"os"
	"testing"

	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

func TestMain(m *testing.M) { os.Exit(meshtest.RunWithLeakCheck(m)) }
