package store_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/store"
)

// TestTokenForANameEnrollsOnlyThatName: a token bound to a name is refused,
// unspent, for any other name, so a token handed to one machine cannot
// claim a name the policy grants to another that has not enrolled yet.
func TestTokenForANameEnrollsOnlyThatName(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "db"))
	now := time.Now()
	if err := s.CreateToken(ctx, store.Token{ID: "t1", SecretHash: []byte{1}, Created: now, Expires: now.Add(time.Hour), Name: "ward-7"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enroll(ctx, enrollment("t1", "guest", now)); !errors.Is(err, store.ErrTokenName) {
		t.Fatalf("another name: %v; want ErrTokenName", err)
	}
	if _, err := s.Node(ctx, "guest"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused name was enrolled: %v", err)
	}
	if _, _, err := s.Enroll(ctx, enrollment("t1", "ward-7", now)); err != nil {
		t.Fatalf("the token's own name, with the token unspent: %v", err)
	}
}

// TestStoreWithoutTokenNamesIsUpgraded: a store made before tokens had
// names gets the column, and its tokens enroll any name as they did.
func TestStoreWithoutTokenNamesIsUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, q := range []string{
		`CREATE TABLE tokens (id TEXT PRIMARY KEY, secret_hash BLOB NOT NULL, tags TEXT NOT NULL, reusable INTEGER NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.Exec(`INSERT INTO tokens (id, secret_hash, tags, reusable, created, expires) VALUES ('t0', x'01', '[]', 0, ?, ?)`, now.UnixNano(), now.Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s := open(t, path)
	if _, _, err := s.Enroll(context.Background(), enrollment("t0", "anyone", now)); err != nil {
		t.Fatalf("a token from before names: %v", err)
	}
	s.Close()
	open(t, path) // and opening it again changes nothing
}
