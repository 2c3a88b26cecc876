package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// TestServiceTagsAreTheirOwnersToGive: a node cannot make its service a
// destination of grants written for a tag it does not own. `serve` is
// refused, nothing is served, and the node is none the worse for asking.
func TestServiceTagsAreTheirOwnersToGive(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	up, srv := serveEHR(t, m) // tag:phi, which ehrPolicy lets ehr-server use
	laptop := m.AddNode("ward-laptop")
	rogue := m.AddNode("rogue")
	applyPolicy(t, m, ehrPolicy)
	m.WaitCatalog(laptop, "ehr")

	_, err := rogue.Serve(context.Background(), localapi.ServeRequest{Name: "phish", Upstream: up.URL, Tags: []string{"tag:phi"}})
	if err == nil || !strings.Contains(err.Error(), "tag:phi") || !strings.Contains(err.Error(), "tagOwners") {
		t.Fatalf("serving under a tag the node does not own: %v; want a refusal that names the tag and tagOwners", err)
	}
	if err := rogue.Unserve(context.Background(), "phish"); err == nil || !strings.Contains(err.Error(), "does not serve") {
		t.Fatalf("the refused service is served locally all the same (unserve: %v)", err)
	}
	// The laptop, granted tag:phi, does not get the rogue as a peer nor
	// phish in its catalog.
	time.Sleep(300 * time.Millisecond)
	if _, ok := laptop.Netmap().Peers["rogue"]; ok {
		t.Error("the laptop got the rogue node as a peer")
	}
	for _, s := range laptop.Netmap().Catalog {
		if s.Name == "phish" {
			t.Error("phish is in the laptop's catalog")
		}
	}
	// Without the tag the same service is published, and the rogue's
	// control plane works on.
	if _, err := rogue.Serve(context.Background(), localapi.ServeRequest{Name: "phish", Upstream: up.URL}); err != nil {
		t.Fatalf("serving without the tag: %v", err)
	}
	applyPolicy(t, m, strings.Replace(ehrPolicy, `"grants": [`, `"grants": [ {"src": ["node:ward-laptop"], "dst": ["svc:phish"], "tools": ["*"]},`, 1))
	m.WaitPeers(rogue, "ward-laptop")
	_ = srv
}

// TestARefusedServiceSetDoesNotCutTheNodeOff: a node that served a service
// while the coordinator was away, under a name another node took meanwhile,
// is refused that name when it comes back; its netmap stream opens anyway,
// so it goes on hearing of peers and revocations, and its status says why
// its services are not published.
func TestARefusedServiceSetDoesNotCutTheNodeOff(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	up := startEHR(t)
	a, b := m.AddNode("node-a"), m.AddNode("node-b")
	m.WaitPeers(a, "node-b")

	m.StopCoordinator()
	if _, err := a.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up.URL}); err == nil {
		t.Fatal("serve while the coordinator is away said it was published")
	}
	m.StopNode("node-a") // ehr stays in its saved set
	m.StartCoordinator()
	if _, err := b.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up.URL}); err != nil {
		// node-b's control connection may still be coming back.
		for deadline := time.Now().Add(45 * time.Second); err != nil; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node-b could not publish ehr: %v", err)
			}
			_, err = b.Serve(context.Background(), localapi.ServeRequest{Name: "ehr", Upstream: up.URL})
		}
	}
	a, err := m.StartNode("node-a", "")
	if err != nil {
		t.Fatal(err)
	}
	// node-a sends ehr with its set, is refused it, and still learns of a
	// node that joins now.
	m.AddNode("late")
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := a.Netmap().Peers["late"]; ok {
			break
		}
		if time.Now().After(deadline) {
			st, _ := a.Status()
			t.Fatalf("node-a never heard of the new node; status %+v", st)
		}
	}
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.ServicesError, "ehr") {
		t.Errorf("status does not say why the services are not published: %q", st.ServicesError)
	}
}

// TestAServeThatFailsIsNeverPublished: a serve that fails on the node
// (here, a stdio command that does not exist) while the coordinator is
// away leaves nothing for the node to publish when it reconnects.
func TestAServeThatFailsIsNeverPublished(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	a := m.AddNode("node-a")
	m.StopCoordinator()
	if _, err := a.Serve(context.Background(), localapi.ServeRequest{Name: "ghost", Stdio: "/nonexistent/mcp-server"}); err == nil {
		t.Fatal("serving a command that does not exist succeeded")
	}
	m.StartCoordinator()
	// A node that joins now reaches node-a only over a new stream, which
	// node-a opens after sending its services.
	m.AddNode("late")
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := a.Netmap().Peers["late"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-a never reconnected")
		}
	}
	svcs, err := m.Admin.Services(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Name == "ghost" {
			t.Fatal("the coordinator lists ghost, which no node serves")
		}
	}
}
