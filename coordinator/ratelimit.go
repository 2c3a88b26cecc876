package coordinator

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// A node's own changes (its endpoint, its services) each cost the
// coordinator a logged event and a signed delta to every node that sees it.
// Nodes change them at start, on reconnection, when they roam and when an
// operator serves or stops a service: a few times an hour. changeBurst
// changes at once and one every changeEvery after that leave all of that
// room, and stop a node (compromised, or looping) from making the whole
// mesh churn.
const (
	changeBurst = 20
	changeEvery = 3 * time.Second
)

// allowChangeLocked reports whether node may make one more change now. The
// caller holds s.mu.
func (s *Server) allowChangeLocked(node string) (bool, time.Duration) {
	l := s.mu.changes[node]
	if l == nil {
		l = rate.NewLimiter(rate.Every(changeEvery), changeBurst)
		s.mu.changes[node] = l
	}
	now := s.now()
	if l.AllowN(now, 1) {
		return true, 0
	}
	r := l.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}

// tooManyChanges answers a change refused by allowChangeLocked.
func tooManyChanges(w http.ResponseWriter, what string, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	httpError(w, http.StatusTooManyRequests, fmt.Sprintf("this node changed its %s too often (at most %d at once, then one every %s); try again in %s", what, changeBurst, changeEvery, wait.Round(time.Second)))
}
