package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/store"
)

func open(t testing.TB, path string) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addrFor(seq uint64) (netip.Addr, netip.Addr, error) {
	return netip.AddrFrom4([4]byte{100, 64, byte(seq >> 8), byte(seq)}),
		netip.AddrFrom16([16]byte{0xfd, 14: byte(seq >> 8), 15: byte(seq)}), nil
}

func enrollment(token, name string, now time.Time) store.Enrollment {
	return store.Enrollment{
		TokenID:    token,
		CheckToken: func(store.Token) error { return nil },
		Node:       store.Node{Name: name, ID: "spiffe://td/node/" + name, WireGuardKey: "wg-" + name},
		AddrFor:    addrFor,
		Now:        now,
	}
}

func TestEnrollConsumesTokenAndRefusesReuse(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	if err := s.CreateToken(ctx, store.Token{ID: "t1", SecretHash: []byte{1}, Tags: []string{"tag:x"}, Created: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n, v, err := s.Enroll(ctx, enrollment("t1", "a", now))
	if err != nil {
		t.Fatal(err)
	}
	if v != 1 || n.IPv4.String() != "100.64.0.1" || len(n.Tags) != 1 || n.Tags[0] != "tag:x" {
		t.Fatalf("enrolled %+v at v%d", n, v)
	}
	if _, _, err := s.Enroll(ctx, enrollment("t1", "b", now)); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("reuse: %v", err)
	}
	if _, _, err := s.Enroll(ctx, enrollment("nope", "b", now)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
}

func TestFailedEnrollmentChangesNothing(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	for _, id := range []string{"t1", "t2", "old"} {
		exp := now.Add(time.Hour)
		if id == "old" {
			exp = now.Add(-time.Second)
		}
		if err := s.CreateToken(ctx, store.Token{ID: id, SecretHash: []byte{1}, Created: now, Expires: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Enroll(ctx, enrollment("t1", "a", now)); err != nil {
		t.Fatal(err)
	}
	bad := enrollment("t2", "b", now)
	bad.CheckToken = func(store.Token) error { return errors.New("wrong secret") }
	if _, _, err := s.Enroll(ctx, bad); err == nil {
		t.Fatal("enrolled with a failing token check")
	}
	if _, _, err := s.Enroll(ctx, enrollment("t2", "a", now)); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("taken name: %v", err)
	}
	if _, _, err := s.Enroll(ctx, enrollment("old", "c", now)); !errors.Is(err, store.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	failing := enrollment("t2", "d", now)
	failing.AddrFor = func(uint64) (netip.Addr, netip.Addr, error) {
		return netip.Addr{}, netip.Addr{}, errors.New("exhausted")
	}
	if _, _, err := s.Enroll(ctx, failing); err == nil {
		t.Fatal("enrolled without addresses")
	}
	nodes, _ := s.Nodes(ctx)
	v, _ := s.Version(ctx)
	if len(nodes) != 1 || v != 1 {
		t.Fatalf("after failures: %d nodes, version %d; want 1, 1", len(nodes), v)
	}
	// t2 is still unused, and the address sequence did not skip.
	n, _, err := s.Enroll(ctx, enrollment("t2", "b", now))
	if err != nil {
		t.Fatalf("t2 was spent by failed attempts: %v", err)
	}
	if n.IPv4.String() != "100.64.0.2" {
		t.Fatalf("address %s, want 100.64.0.2 (no gap from rolled-back attempts)", n.IPv4)
	}
}

func TestRevokeAndChangeLog(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	_ = s.CreateToken(ctx, store.Token{ID: "t", SecretHash: []byte{1}, Reusable: true, Created: now, Expires: now.Add(time.Hour)})
	for _, n := range []string{"a", "b"} {
		if _, _, err := s.Enroll(ctx, enrollment("t", n, now)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordSerial(ctx, store.Serial{Serial: "ab", Node: "b", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := s.SetEndpoint(ctx, "a", netip.MustParseAddrPort("127.0.0.1:5")); err != nil || !changed {
		t.Fatalf("set endpoint: %v %v", changed, err)
	}
	if _, changed, _ := s.SetEndpoint(ctx, "a", netip.MustParseAddrPort("127.0.0.1:5")); changed {
		t.Fatal("an unchanged endpoint was logged")
	}
	v, serials, err := s.Revoke(ctx, "b", now)
	if err != nil || v != 4 || len(serials) != 1 {
		t.Fatalf("revoke: v%d %v %v", v, serials, err)
	}
	if _, _, err := s.Revoke(ctx, "b", now); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("second revoke: %v", err)
	}
	rs, _ := s.RevokedSerials(ctx, now)
	if len(rs) != 1 || rs[0] != "ab" {
		t.Fatalf("revoked serials %v", rs)
	}
	ev, ok, err := s.EventsSince(ctx, 2)
	if err != nil || !ok || len(ev) != 2 || ev[0].Node != "a" || ev[1].Kind != store.EventRevoke {
		t.Fatalf("events since 2: %+v %v %v", ev, ok, err)
	}
	if _, ok, _ := s.EventsSince(ctx, 99); ok {
		t.Fatal("a version from the future was served as deltas")
	}
	if _, _, err := s.Enroll(ctx, enrollment("t", "b", now)); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("re-enroll of revoked name: %v", err)
	}
}

// The child side of TestSurvivesKillNineMidWrite: enroll nodes as fast as
// possible until killed.
func TestHelperEnrollForever(t *testing.T) {
	path := os.Getenv("MCPMESH_STORE_CHILD")
	if path == "" {
		t.Skip("helper process for TestSurvivesKillNineMidWrite")
	}
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	_ = s.CreateToken(ctx, store.Token{ID: "t", SecretHash: []byte{1}, Reusable: true, Created: now, Expires: now.Add(time.Hour)})
	fmt.Println("ready")
	for i := 0; i < 100000; i++ {
		if _, _, err := s.Enroll(ctx, enrollment("t", os.Getenv("MCPMESH_STORE_ROUND")+"-n"+strconv.Itoa(i), now)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSurvivesKillNineMidWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	prev := 0
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperEnrollForever$")
		cmd.Env = append(os.Environ(), "MCPMESH_STORE_CHILD="+path, "MCPMESH_STORE_ROUND=r"+strconv.Itoa(round))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+200*round) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		// What was committed is all there and consistent: every node has
		// its join event, addresses are unique, and the version counter
		// matches the log.
		s, err := store.OpenSQLite(path)
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		ctx := context.Background()
		nodes, err := s.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := s.Version(ctx)
		ev, ok, err := s.EventsSince(ctx, 0)
		if err != nil || !ok {
			t.Fatalf("events: %v %v", ok, err)
		}
		if len(nodes) <= prev {
			t.Fatalf("round %d: the child committed nothing in its time (%d nodes)", round, len(nodes))
		}
		prev = len(nodes)
		if uint64(len(ev)) != v || len(ev) != len(nodes) {
			t.Fatalf("round %d: %d nodes, %d events, version %d: out of step", round, len(nodes), len(ev), v)
		}
		seen := map[netip.Addr]bool{}
		for _, n := range nodes {
			if seen[n.IPv4] {
				t.Fatalf("address %s allocated twice", n.IPv4)
			}
			seen[n.IPv4] = true
		}
		t.Logf("round %d: %d nodes committed before kill -9", round, len(nodes))
		s.Close()
	}
}

// A node enrolls again under its name only with the identity key of its
// latest SVID (renewals move it), keeping its record; the token is spent;
// a revoked node never does.
func TestEnrollAgainNeedsTheNodesLatestKey(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		if err := s.CreateToken(ctx, store.Token{ID: id, SecretHash: []byte{1}, Tags: []string{"tag:" + id}, Created: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	with := func(token string, key string) store.Enrollment {
		e := enrollment(token, "a", now.Add(time.Minute))
		e.Node.WireGuardKey = "wg-a-" + token
		e.IdentityKey = []byte(key)
		return e
	}
	first, _, err := s.Enroll(ctx, with("t1", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enroll(ctx, with("t2", "someone else's")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("another key: %v", err)
	}
	if _, _, err := s.Enroll(ctx, with("t2", "")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("no key: %v", err)
	}
	again, v, err := s.Enroll(ctx, with("t2", "k1"))
	if err != nil {
		t.Fatalf("the same key: %v", err)
	}
	if again.IPv4 != first.IPv4 || again.ID != first.ID || !slices.Equal(again.Tags, first.Tags) || again.WireGuardKey != "wg-a-t2" || v <= 1 {
		t.Fatalf("enrolled again as %+v (v%d), first %+v", again, v, first)
	}
	if stored, err := s.Node(ctx, "a"); err != nil || stored.WireGuardKey != "wg-a-t2" || stored.IPv4 != first.IPv4 {
		t.Fatalf("stored %+v %v", stored, err)
	}
	if _, _, err := s.Enroll(ctx, with("t2", "k1")); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("the token was not spent: %v", err)
	}
	// A renewal with a new key moves the key that counts.
	if err := s.RecordSerial(ctx, store.Serial{Serial: "01", Node: "a", Expires: now.Add(time.Hour), Key: []byte("k2")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enroll(ctx, with("t3", "k1")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("the key before the renewal: %v", err)
	}
	if _, _, err := s.Enroll(ctx, with("t3", "k2")); err != nil {
		t.Fatalf("the renewed key: %v", err)
	}
	if _, _, err := s.Revoke(ctx, "a", now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enroll(ctx, with("t4", "k2")); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("a revoked node with its key: %v", err)
	}
}
