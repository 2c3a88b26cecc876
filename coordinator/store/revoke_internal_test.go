package store

import (
	"context"
	"path/filepath"
	"testing"
)

// TestOpenReleasesServicesOfNodesRevokedEarlier: a store written before
// Revoke released service names gives them up when opened.
func TestOpenReleasesServicesOfNodesRevokedEarlier(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO nodes (name, spiffe_id, wg_key, ipv4, ipv6, endpoint, tags, created, last_seen, revoked_at) VALUES ('gone', 'spiffe://td/node/gone', 'wg-gone', '4.1', '6.1', '', '[]', 0, 0, 1)`,
		`INSERT INTO nodes (name, spiffe_id, wg_key, ipv4, ipv6, endpoint, tags, created, last_seen, revoked_at) VALUES ('here', 'spiffe://td/node/here', 'wg-here', '4.2', '6.2', '', '[]', 0, 0, 0)`,
		`INSERT INTO services (name, node, tags) VALUES ('ehr', 'gone', '[]'), ('docs', 'here', '[]')`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svcs, err := s.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "docs" {
		t.Fatalf("services after reopening = %+v (%v); want docs alone", svcs, err)
	}
}
