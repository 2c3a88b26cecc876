package identity_test

import (
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNodeIDRoundTrip(t *testing.T) {
	td := mustTD(t, "mesh.example")
	for _, name := range []string{"a", "web-1", "0", strings.Repeat("x", 63), "a-b-c9"} {
		id, err := identity.NodeID(td, name)
		if err != nil {
			t.Fatalf("NodeID(%q): %v", name, err)
		}
		if want := "spiffe://mesh.example/node/" + name; id.String() != want {
			t.Errorf("NodeID(%q) = %s, want %s", name, id, want)
		}
		got, err := identity.NodeName(id)
		if err != nil || got != name {
			t.Errorf("NodeName(%s) = %q, %v; want %q", id, got, err, name)
		}
	}
}

func TestNodeIDRejectsBadNames(t *testing.T) {
	td := mustTD(t, "mesh.example")
	for _, name := range []string{"", "-a", "a-", "A", "a_b", "a.b", "a/b", "a b", "é", strings.Repeat("x", 64), "..", "a\n"} {
		if err := identity.ValidateNodeName(name); err == nil {
			t.Errorf("ValidateNodeName(%q) accepted", name)
		}
		if _, err := identity.NodeID(td, name); err == nil {
			t.Errorf("NodeID(%q) accepted", name)
		}
		if _, err := identity.AdminID(td, name); err == nil {
			t.Errorf("AdminID(%q) accepted", name)
		}
	}
	if _, err := identity.NodeID(spiffeid.TrustDomain{}, "a"); err == nil {
		t.Error("NodeID with zero trust domain accepted")
	}
}

func TestNodeNameRejectsOtherPaths(t *testing.T) {
	for _, s := range []string{
		"spiffe://mesh.example",
		"spiffe://mesh.example/node",
		"spiffe://mesh.example/nodes/a",
		"spiffe://mesh.example/admin/a",
		"spiffe://mesh.example/coordinator",
		"spiffe://mesh.example/node/a/agent/b",
		"spiffe://mesh.example/x/node/a",
		"spiffe://mesh.example/node/A",
		"spiffe://mesh.example/node/-a",
	} {
		id, err := spiffeid.FromString(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if name, err := identity.NodeName(id); err == nil {
			t.Errorf("NodeName(%s) = %q, want error", s, name)
		}
	}
	if _, err := identity.NodeName(spiffeid.ID{}); err == nil {
		t.Error("NodeName(zero ID) accepted")
	}
}

func TestAdminAndCoordinatorIDs(t *testing.T) {
	td := mustTD(t, "mesh.example")
	admin, err := identity.AdminID(td, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if admin.String() != "spiffe://mesh.example/admin/alice" {
		t.Errorf("AdminID = %s", admin)
	}
	if !identity.IsAdmin(admin) {
		t.Error("IsAdmin(admin) = false")
	}
	node, _ := identity.NodeID(td, "alice")
	coord := identity.CoordinatorID(td)
	if coord.String() != "spiffe://mesh.example/coordinator" {
		t.Errorf("CoordinatorID = %s", coord)
	}
	for _, id := range []spiffeid.ID{node, coord, td.ID(), spiffeid.RequireFromString("spiffe://mesh.example/admin/alice/x"), {}} {
		if identity.IsAdmin(id) {
			t.Errorf("IsAdmin(%s) = true", id)
		}
	}
	if _, err := identity.NodeName(admin); err == nil {
		t.Error("an admin ID passed as a node")
	}
}
