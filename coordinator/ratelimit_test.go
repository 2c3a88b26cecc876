package coordinator_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestANodeCannotMakeTheMeshChurn: a node that keeps changing its endpoint
// is refused (429) once past its allowance, and its peers hear no more of
// it; sending the same endpoint or services again, as every reconnection
// does, is never refused.
func TestANodeCannotMakeTheMeshChurn(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	flapper, peer := l.start("flapper"), l.start("peer")
	if err := peer.WaitPeerCount(l.ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The client counts a message after applying it: wait for the first
	// map to be counted, or it would count among the changes below.
	l.waitFor("the peer's first map counted", func() bool { n, _ := peer.Client.Stats(); return n >= 1 })
	before, _ := peer.Client.Stats()
	var refused *api.StatusError
	changes := 0
	for i := range 100 {
		err := flapper.Client.SetEndpoint(l.ctx, api.EndpointInfo{Advertise: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
		if errors.As(err, &refused) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		changes++
	}
	if refused == nil || refused.Code != http.StatusTooManyRequests || !strings.Contains(refused.Msg, "too often") {
		t.Fatalf("100 endpoint changes in a row were all taken (last error %v)", refused)
	}
	if changes < 10 {
		t.Fatalf("only %d changes were allowed before the refusal; legitimate roaming needs room", changes)
	}
	// The same endpoint again, and the same (empty) services, still pass.
	last := fmt.Sprintf("127.0.0.1:%d", 1000+changes-1)
	if err := flapper.Client.SetEndpoint(l.ctx, api.EndpointInfo{Advertise: last}); err != nil {
		t.Fatalf("the same endpoint again: %v", err)
	}
	if err := flapper.Client.SetServices(l.ctx, nil); err != nil {
		t.Fatalf("the same services again: %v", err)
	}
	if err := flapper.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "new"}}); !errors.As(err, &refused) || refused.Code != http.StatusTooManyRequests {
		t.Fatalf("a services change past the allowance: %v", err)
	}
	// The peer heard the allowed changes, no more.
	for peer.Netmap().Peers["flapper"].Endpoint.String() != last {
		select {
		case <-peer.Updated():
		case <-l.ctx.Done():
			t.Fatal("the peer never heard the last allowed endpoint")
		}
	}
	if after, _ := peer.Client.Stats(); after-before > uint64(changes) {
		t.Errorf("the peer got %d messages for %d allowed changes", after-before, changes)
	}
}

// TestARefusedSetStaysRefusedForWhatItIs: a set the coordinator refuses (a
// name another node holds), sent again at every reconnection, is refused
// for that every time; it never runs out the node's allowance and turns
// into a 429.
func TestARefusedSetStaysRefusedForWhatItIs(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	l := newLights(t, m.URL, m.Admin)
	holder, other := l.start("holder"), l.start("other")
	if err := holder.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "ehr"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		var se *api.StatusError
		if err := other.Client.SetServices(l.ctx, []api.ServiceSpec{{Name: "ehr"}}); !errors.As(err, &se) || se.Code != http.StatusConflict {
			t.Fatalf("attempt %d: %v; want 409, the name is taken", i+1, err)
		}
	}
}
