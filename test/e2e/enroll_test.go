package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
	"github.com/mcpmesh/mcpmesh/test/meshtest"
)

// nodeCount is how many nodes the coordinator knows.
func nodeCount(t *testing.T, m *meshtest.Mesh) int {
	t.Helper()
	ns, err := m.Admin.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ns)
}

func TestEnrollmentRefusesBadTokensAndLeavesStateUnchanged(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	other := meshtest.New(t, meshtest.Options{})
	m.AddNode("existing")

	used := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	if _, err := m.StartNode("uses-it", used); err != nil {
		t.Fatal(err)
	}
	expired := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Millisecond)})
	time.Sleep(20 * time.Millisecond)
	good := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	tok, err := identity.ParseToken(good)
	if err != nil {
		t.Fatal(err)
	}
	tok.Secret[0] ^= 1 // right ID and CA, wrong secret: a guess
	guessed := tok.String()

	cases := []struct {
		name, hostname, token, want string
	}{
		{"reused single-use token", "n1", used, "already used"},
		{"expired token", "n2", expired, "expired"},
		{"malformed token", "n3", "mcpmesh-1.nope", "malformed"},
		{"wrong secret", "n4", guessed, "not valid"},
		{"token of another coordinator's CA", "n5", other.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)}), "CA"},
		{"name already enrolled", "existing", good, "already enrolled"},
	}
	before := nodeCount(t, m)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.StartNodeAt(t.TempDir(), c.hostname, c.token)
			if err == nil {
				t.Fatal("enrolled")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if n := nodeCount(t, m); n != before {
				t.Fatalf("node count changed from %d to %d", before, n)
			}
		})
	}
	// The good token was not spent by the failed attempt with its name.
	if _, err := m.StartNode("fresh", good); err != nil {
		t.Fatalf("the token refused for a taken name could not be used after: %v", err)
	}
}

func TestEnrollmentRefusesCSRForAnotherIdentity(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	m.AddNode("victim")
	good := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	tok, err := identity.ParseToken(good)
	if err != nil {
		t.Fatal(err)
	}
	td := m.Coordinator().TrustDomain()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// The attacker enrolls as "attacker" but asks for victim's identity, or
	// for an admin's.
	victim, _ := identity.NodeID(td, "victim")
	admin, _ := identity.AdminID(td, "admin")
	for _, id := range []spiffeid.ID{victim, admin} {
		csr, err := identity.NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		_, err = controlclient.Enroll(context.Background(), m.URL, tok, api.EnrollRequest{
			Hostname: "attacker", WireGuardKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", CSR: csr,
		})
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
			t.Fatalf("CSR for %s: err = %v, want HTTP 400", id, err)
		}
	}
	if n := nodeCount(t, m); n != 1 {
		t.Fatalf("%d nodes after refused enrollments", n)
	}
	if _, err := m.StartNode("honest", good); err != nil {
		t.Fatalf("token was spent by a refused enrollment: %v", err)
	}
}

func TestRevokedNodeCannotRenewOrEnrollAgain(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	m.AddNode("node-a")
	b := m.AddNode("node-b")
	if err := m.Admin.Revoke(context.Background(), "node-b"); err != nil {
		t.Fatal(err)
	}
	// Re-enrollment under the same name, with a fresh token and fresh keys.
	m.StopNode(b.Name())
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	if _, err := m.StartNode("node-b-new-dir", tok); err != nil {
		t.Fatal(err) // a different name works
	}
	tok = m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)})
	_, err := m.StartNodeAt(t.TempDir(), "node-b", tok)
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("re-enrollment of a revoked name: %v", err)
	}

	// The revoked node itself, restarted from its state with a still-valid
	// SVID: the coordinator refuses its stream and its renewal.
	b2, err := m.StartNode("node-b", "")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := b2.Status()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(st.ControlError, "revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked node's status: connected=%v err=%q", st.Connected, st.ControlError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cred := readCredential(t, m.NodeDir("node-b"))
	svid, err := cred.SVID()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := controlclient.New(controlclient.Config{
		URL: m.URL, Node: "node-b", SVID: identity.NewRotatingSVID(svid),
		Bundle: cred.TrustBundle(m.Coordinator().TrustDomain()), NetmapKey: make([]byte, 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	csr, err := identity.NewCSR(cred.Key, svid.ID)
	if err != nil {
		t.Fatal(err)
	}
	var se *api.StatusError
	if _, err := cc.Renew(context.Background(), csr); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("renewal by a revoked node: %v", err)
	}
	// A second revoke says so.
	if err := m.Admin.Revoke(context.Background(), "node-b"); err == nil || !strings.Contains(err.Error(), "already revoked") {
		t.Fatalf("second revoke: %v", err)
	}
	if err := m.Admin.Revoke(context.Background(), "no-such-node"); err == nil || !strings.Contains(err.Error(), "no node named") {
		t.Fatalf("revoke of unknown node: %v", err)
	}
}

// readCredential loads a node's SVID and identity key from its state dir,
// as an attacker who copied them would.
func readCredential(t *testing.T, dir string) *identity.Credential {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	certs, err := identity.ParseCertsPEM(read("svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := identity.ParseCertsPEM(read("bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.ParseKeyPEM(read("identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Credential{Certs: certs, Key: key, Roots: roots}
}

// A node whose SVID expired while it was not running (a laptop closed for
// longer than an SVID lives) says what to do, and comes back with a fresh
// join token as itself: the same SPIFFE ID and mesh addresses, reachable
// by its peers again. Someone else with a valid token but without the
// node's identity key cannot take its name that way.
func TestNodeWhoseSVIDExpiredOfflineEnrollsAgainAsItself(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{SVIDTTL: 2 * time.Second})
	a, b := m.AddNode("node-a"), m.AddNode("node-b")
	m.WaitPeers(a, "node-b")
	id, addrs := b.ID(), b.Addresses()
	m.StopNode("node-b")
	expiry := readCredential(t, m.NodeDir("node-b")).Certs[0].NotAfter
	time.Sleep(time.Until(expiry) + 200*time.Millisecond)

	_, err := m.StartNode("node-b", "")
	if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("start with an expired SVID and no token: %v", err)
	}
	tok := func() string { return m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour)}) }
	if _, err := m.StartNodeAt(t.TempDir(), "node-b", tok()); err == nil || !strings.Contains(err.Error(), "already enrolled") {
		t.Fatalf("a stranger enrolling as node-b: %v", err)
	}

	b2, err := m.StartNode("node-b", tok())
	if err != nil {
		t.Fatalf("enrolling again with a token: %v", err)
	}
	if b2.ID() != id || !slices.Equal(b2.Addresses(), addrs) {
		t.Fatalf("came back as %s %v, was %s %v", b2.ID(), b2.Addresses(), id, addrs)
	}
	waitFor(t, "node-b connected", func() bool {
		st, err := b2.Status()
		return err == nil && st.Connected && time.Until(st.SVIDExpires) > 0
	})
	serveEcho(t, b2)
	mustEcho(t, a, b2)
}

// A running node whose SVID expires before it can renew it (the
// coordinator was away for longer than an SVID lives) stops retrying and
// says in its status what to do.
func TestNodeSaysWhenItsSVIDExpiredWhileRunning(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{SVIDTTL: 2 * time.Second})
	a := m.AddNode("node-a")
	m.StopCoordinator()
	waitFor(t, "the SVID expired in the status", func() bool {
		st, err := a.Status()
		return err == nil && !st.Connected && strings.Contains(st.ControlError, "SVID expired") && strings.Contains(st.ControlError, "--token")
	})
}

// TestTokenForANameCannotClaimAnother: a token made for one machine's name
// cannot enroll under a name the policy grants to another machine that has
// not enrolled yet.
func TestTokenForANameCannotClaimAnother(t *testing.T) {
	m := meshtest.New(t, meshtest.Options{})
	tok := m.Token(api.TokenCreateRequest{TTL: api.Duration(time.Hour), Name: "ward-7"})
	_, err := m.StartNode("guest", tok)
	if err == nil || !strings.Contains(err.Error(), `for "ward-7"`) || !strings.Contains(err.Error(), "--hostname") {
		t.Fatalf("enrolling as another name: %v; want a refusal naming the token's name and --hostname", err)
	}
	if _, err := m.StartNode("ward-7", tok); err != nil {
		t.Fatalf("the token's own name: %v", err)
	}
}
