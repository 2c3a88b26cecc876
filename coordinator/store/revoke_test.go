package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/store"
)

// TestRevokeReleasesServiceNames: a revoked node serves nothing, so the
// names it published are free for another node once the revocation is
// committed, with no second write needed.
func TestRevokeReleasesServiceNames(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	if err := s.CreateToken(ctx, store.Token{ID: "t", SecretHash: []byte{1}, Reusable: true, Created: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, _, err := s.Enroll(ctx, enrollment("t", name, now)); err != nil {
			t.Fatal(err)
		}
	}
	ehr := []store.Service{{Name: "ehr", Tags: []string{"tag:phi"}}}
	if _, _, err := s.SetServices(ctx, "a", ehr); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SetServices(ctx, "b", ehr); !errors.Is(err, store.ErrServiceTaken) {
		t.Fatalf("b publishing a's service before the revocation: %v, want ErrServiceTaken", err)
	}
	if _, _, err := s.Revoke(ctx, "a", now); err != nil {
		t.Fatal(err)
	}
	if svcs, err := s.Services(ctx); err != nil || len(svcs) != 0 {
		t.Fatalf("after revoking a, services = %+v (%v); want none", svcs, err)
	}
	v, changed, err := s.SetServices(ctx, "b", ehr)
	if err != nil || !changed || v == 0 {
		t.Fatalf("b publishing ehr after a was revoked: v%d changed=%v err=%v", v, changed, err)
	}
	svcs, err := s.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "ehr" || svcs[0].Node != "b" {
		t.Fatalf("services = %+v (%v); want ehr on b", svcs, err)
	}
}
