package stdioserve

import (
	"log/slog"
	"time"
)

// StartIdle is Start with a shorter idle timeout, for tests.
func StartIdle(command string, log *slog.Logger, idle time.Duration) (*Server, error) {
	return start(command, log, idle)
}
