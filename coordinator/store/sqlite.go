package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// keepEvents is how much change log is kept; a node that was away for more
// changes than this gets a full map instead of deltas.
const keepEvents = 50_000

const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
	id          TEXT PRIMARY KEY,
	secret_hash BLOB NOT NULL,
	tags        TEXT NOT NULL,
	reusable    INTEGER NOT NULL,
	created     INTEGER NOT NULL,
	expires     INTEGER NOT NULL,
	uses        INTEGER NOT NULL DEFAULT 0,
	name        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS nodes (
	name       TEXT PRIMARY KEY,
	spiffe_id  TEXT NOT NULL UNIQUE,
	wg_key     TEXT NOT NULL UNIQUE,
	ipv4       TEXT NOT NULL UNIQUE,
	ipv6       TEXT NOT NULL UNIQUE,
	endpoint   TEXT NOT NULL,
	tags       TEXT NOT NULL,
	created    INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL DEFAULT 0
);
-- The identity key (SHA-256 of its SubjectPublicKeyInfo) of each node's
-- latest SVID: a node whose SVID expired while it was away proves with it,
-- and a fresh join token, that it is the same node enrolling again.
CREATE TABLE IF NOT EXISTS node_keys (
	node TEXT PRIMARY KEY REFERENCES nodes(name),
	spki BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS serials (
	serial  TEXT PRIMARY KEY,
	node    TEXT NOT NULL REFERENCES nodes(name),
	expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS serials_node ON serials(node);
-- Every netmap stream asks for the revoked nodes' serials when it opens;
-- revoked nodes are few, so the lookup starts from them, not from a scan.
CREATE INDEX IF NOT EXISTS nodes_revoked ON nodes(revoked_at) WHERE revoked_at != 0;
CREATE TABLE IF NOT EXISTS policies (
	version  INTEGER PRIMARY KEY,
	source   BLOB NOT NULL,
	filename TEXT NOT NULL,
	author   TEXT NOT NULL,
	created  INTEGER NOT NULL,
	note     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS services (
	name TEXT PRIMARY KEY,
	node TEXT NOT NULL REFERENCES nodes(name),
	tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS services_node ON services(node);
` + auditTable + `CREATE TABLE IF NOT EXISTS exposure (
	node   TEXT PRIMARY KEY REFERENCES nodes(name),
	report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
	version INTEGER PRIMARY KEY,
	node    TEXT NOT NULL,
	kind    TEXT NOT NULL
);
`

// auditTable is the audit trail. An event is keyed by its node, the
// node's sequence number and a variant: 0, unless the node sent another
// event under that sequence before (see AppendAudit). fp fingerprints its
// content, so that an event sent again is found by index however many
// variants its sequence has; events stored before fingerprints have none.
const auditTable = `CREATE TABLE IF NOT EXISTS audit (
	node      TEXT NOT NULL,
	seq       INTEGER NOT NULL,
	variant   INTEGER NOT NULL DEFAULT 0,
	time      INTEGER NOT NULL,
	caller    TEXT NOT NULL,
	service   TEXT NOT NULL,
	method    TEXT NOT NULL,
	tool      TEXT NOT NULL,
	decision  TEXT NOT NULL,
	reason    TEXT NOT NULL,
	policy    INTEGER NOT NULL,
	latency   INTEGER NOT NULL,
	digest    TEXT NOT NULL,
	session   TEXT NOT NULL,
	received  INTEGER NOT NULL DEFAULT 0,
	fp        BLOB,
	PRIMARY KEY (node, seq, variant)
);
`

// SQLite is the embedded Store.
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database at path. WAL with
// synchronous=FULL makes every committed transaction durable across a crash
// or kill -9; a single connection serialises writers so SQLITE_BUSY cannot
// surface to callers.
func OpenSQLite(path string) (*SQLite, error) {
	// SQLite creates its files with the process umask, and its -wal and
	// -shm files copy the database's mode: the database (policy, nodes,
	// audit) is made owner-only before SQLite opens it, and a store from
	// before is tightened.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: make %s owner-only: %w", p, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: create schema in %s: %w", path, err)
	}
	// Columns added since the table was first created.
	if err := addColumn(db, "tokens", "name", `TEXT NOT NULL DEFAULT ''`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: upgrade %s: %w", path, err)
	}
	if err := addColumn(db, "audit", "received", `INTEGER NOT NULL DEFAULT 0`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: upgrade %s: %w", path, err)
	}
	// Retention counts from when the coordinator received an event
	// (PruneAudit). Events stored before that was recorded count from
	// their own time, the best there is for them. Not clamped to now: a
	// coordinator that starts with its clock behind (before NTP) would
	// date the whole trail back, and delete it once the clock is right;
	// an event from a node whose clock ran ahead is kept too long, which
	// loses nothing.
	if err := addAuditVariants(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: upgrade %s: %w", path, err)
	}
	if err := addColumn(db, "audit", "fp", `BLOB`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: upgrade %s: %w", path, err)
	}
	if _, err := db.Exec(`CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
		CREATE INDEX IF NOT EXISTS audit_received ON audit(received);
		CREATE UNIQUE INDEX IF NOT EXISTS audit_fp ON audit(node, seq, fp)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: upgrade %s: index the audit trail: %w", path, err)
	}
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		db.Close()
		return nil, fmt.Errorf("store: integrity check of %s failed: %v %s", path, err, ok)
	}
	// Stores written before Revoke released service names may still hold
	// some for revoked nodes; nobody could call them, so nothing else
	// changes when they go.
	if _, err := db.Exec(`DELETE FROM services WHERE node IN (SELECT name FROM nodes WHERE revoked_at != 0)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: release services of revoked nodes in %s: %w", path, err)
	}
	return &SQLite{db: db}, nil
}

// Close implements Store.
func (s *SQLite) Close() error { return s.db.Close() }

func (s *SQLite) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback() // the error that caused the rollback is what matters
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// addAuditVariants rebuilds an audit table made before events were keyed
// by variant too (the key was node and sequence alone, so an event that
// reused a sequence was dropped as a duplicate; see AppendAudit). SQLite
// cannot change a table's key in place: the rows are copied, in one
// transaction, into a table with the new key, their receipt times set as
// OpenSQLite explains. At its peak the database needs about three times
// the table's size on disk: the table, its copy, and the copy again in
// the write-ahead log.
func addAuditVariants(db *sql.DB) error {
	has, err := hasColumn(db, "audit", "variant")
	if err != nil || has {
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return fmt.Errorf("key audit events by variant: %w", err)
	}
	defer tx.Rollback() // a no-op once committed
	const cols = `node, seq, time, caller, service, method, tool, decision, reason, policy, latency, digest, session`
	for _, q := range []string{
		strings.Replace(auditTable, "CREATE TABLE IF NOT EXISTS audit (", "CREATE TABLE audit_by_variant (", 1),
		`INSERT INTO audit_by_variant (` + cols + `, received) SELECT ` + cols +
			`, CASE WHEN received = 0 THEN time ELSE received END FROM audit`,
		`DROP TABLE audit`,
		`ALTER TABLE audit_by_variant RENAME TO audit`,
	} {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("key audit events by variant: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("key audit events by variant: %w", err)
	}
	return nil
}

// addColumn adds a column to a table of a store created before the column
// existed; a store that has it already is left alone.
func addColumn(db *sql.DB, table, column, decl string) error {
	has, err := hasColumn(db, table, column)
	if err != nil || has {
		return err
	}
	if _, err := db.Exec(`ALTER TABLE ` + table + ` ADD COLUMN ` + column + ` ` + decl); err != nil {
		return fmt.Errorf("add %s.%s: %w", table, column, err)
	}
	return nil
}

// hasColumn reports whether table has column.
func hasColumn(db *sql.DB, table, column string) (bool, error) {
	rows, err := db.Query(`SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return false, fmt.Errorf("columns of %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return false, fmt.Errorf("columns of %s: %w", table, err)
		}
		if name == column {
			return true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("columns of %s: %w", table, err)
	}
	return false, nil
}

// CreateToken implements Store.
func (s *SQLite) CreateToken(ctx context.Context, t Token) error {
	tags, err := json.Marshal(nonNil(t.Tags))
	if err != nil {
		return fmt.Errorf("store: encode tags: %w", err)
	}
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO tokens (id, secret_hash, tags, reusable, created, expires, name) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.SecretHash, string(tags), t.Reusable, t.Created.UnixNano(), t.Expires.UnixNano(), t.Name)
	if err != nil {
		return fmt.Errorf("store: insert token: %w", err)
	}
	return nil
}

// Enroll implements Store.
func (s *SQLite) Enroll(ctx context.Context, e Enrollment) (Node, uint64, error) {
	n := e.Node
	var version uint64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var t Token
		var tags string
		var created, expires int64
		err := tx.QueryRowContext(ctx,
			`SELECT id, secret_hash, tags, reusable, created, expires, uses, name FROM tokens WHERE id = ?`, e.TokenID).
			Scan(&t.ID, &t.SecretHash, &tags, &t.Reusable, &created, &expires, &t.Uses, &t.Name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: join token", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: read token: %w", err)
		}
		if err := json.Unmarshal([]byte(tags), &t.Tags); err != nil {
			return fmt.Errorf("store: decode token tags: %w", err)
		}
		t.Created, t.Expires = time.Unix(0, created), time.Unix(0, expires)
		if err := e.CheckToken(t); err != nil {
			return err
		}
		if !e.Now.Before(t.Expires) {
			return ErrTokenExpired
		}
		if !t.Reusable && t.Uses > 0 {
			return ErrTokenUsed
		}
		if t.Name != "" && t.Name != n.Name {
			return fmt.Errorf("%w: it is for %q, not %q", ErrTokenName, t.Name, n.Name)
		}
		old, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = ?`, n.Name))
		switch {
		case err == nil && old.Revoked():
			return fmt.Errorf("%w: %q was revoked and cannot enroll again", ErrRevoked, n.Name)
		case err == nil:
			var key []byte
			err := tx.QueryRowContext(ctx, `SELECT spki FROM node_keys WHERE node = ?`, n.Name).Scan(&key)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("store: look up node key: %w", err)
			}
			if len(e.IdentityKey) == 0 || !bytes.Equal(key, e.IdentityKey) {
				return fmt.Errorf("%w: %q", ErrNameTaken, n.Name)
			}
			// The same node, back with a fresh token after its SVID
			// expired: it keeps its addresses and tags.
			old.WireGuardKey, old.Endpoint, old.LastSeen = n.WireGuardKey, n.Endpoint, e.Now
			n = old
			if _, err := tx.ExecContext(ctx, `UPDATE nodes SET wg_key = ?, endpoint = ?, last_seen = ? WHERE name = ?`,
				n.WireGuardKey, addrPortString(n.Endpoint), n.LastSeen.UnixNano(), n.Name); err != nil {
				return fmt.Errorf("store: update node %q: %w", n.Name, err)
			}
			version, err = spendAndLog(ctx, tx, t.ID, n.Name)
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: look up node: %w", err)
		}
		seq, err := nextMeta(ctx, tx, "addr_seq")
		if err != nil {
			return err
		}
		n.IPv4, n.IPv6, err = e.AddrFor(seq)
		if err != nil {
			return err
		}
		if n.Tags == nil {
			n.Tags = t.Tags
		}
		n.Created, n.LastSeen = e.Now, e.Now
		ntags, err := json.Marshal(nonNil(n.Tags))
		if err != nil {
			return fmt.Errorf("store: encode tags: %w", err)
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO nodes (name, spiffe_id, wg_key, ipv4, ipv6, endpoint, tags, created, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			n.Name, n.ID, n.WireGuardKey, n.IPv4.String(), n.IPv6.String(), addrPortString(n.Endpoint), string(ntags),
			n.Created.UnixNano(), n.LastSeen.UnixNano())
		if err != nil {
			return fmt.Errorf("store: insert node %q: %w", n.Name, err)
		}
		if err := setNodeKey(ctx, tx, n.Name, e.IdentityKey); err != nil {
			return err
		}
		version, err = spendAndLog(ctx, tx, t.ID, n.Name)
		return err
	})
	if err != nil {
		return Node{}, 0, err
	}
	return n, version, nil
}

// spendAndLog counts a use of the token and logs the node's join, whose
// version it returns.
func spendAndLog(ctx context.Context, tx *sql.Tx, token, node string) (uint64, error) {
	if _, err := tx.ExecContext(ctx, `UPDATE tokens SET uses = uses + 1 WHERE id = ?`, token); err != nil {
		return 0, fmt.Errorf("store: consume token: %w", err)
	}
	return logEvent(ctx, tx, node, EventJoin)
}

// setNodeKey records the identity key of a node's latest SVID.
func setNodeKey(ctx context.Context, tx *sql.Tx, node string, key []byte) error {
	if len(key) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO node_keys (node, spki) VALUES (?, ?) ON CONFLICT(node) DO UPDATE SET spki = excluded.spki`, node, key); err != nil {
		return fmt.Errorf("store: record node key: %w", err)
	}
	return nil
}

// nextMeta increments and returns a counter kept in meta.
func nextMeta(ctx context.Context, tx *sql.Tx, key string) (uint64, error) {
	var v uint64
	err := tx.QueryRowContext(ctx,
		`INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value`, key).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: advance %s: %w", key, err)
	}
	return v, nil
}

// logEvent appends to the change log and trims its oldest entries.
func logEvent(ctx context.Context, tx *sql.Tx, node, kind string) (uint64, error) {
	v, err := nextMeta(ctx, tx, "version")
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (version, node, kind) VALUES (?, ?, ?)`, v, node, kind); err != nil {
		return 0, fmt.Errorf("store: log event: %w", err)
	}
	if v%1000 == 0 && v > keepEvents {
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE version <= ?`, v-keepEvents); err != nil {
			return 0, fmt.Errorf("store: trim change log: %w", err)
		}
	}
	return v, nil
}

const nodeColumns = `name, spiffe_id, wg_key, ipv4, ipv6, endpoint, tags, created, last_seen, revoked_at`

type scanner interface{ Scan(dest ...any) error }

func scanNode(row scanner) (Node, error) {
	var n Node
	var v4, v6, ep, tags string
	var created, seen, revoked int64
	if err := row.Scan(&n.Name, &n.ID, &n.WireGuardKey, &v4, &v6, &ep, &tags, &created, &seen, &revoked); err != nil {
		return n, err
	}
	var err error
	if n.IPv4, err = netip.ParseAddr(v4); err != nil {
		return n, fmt.Errorf("store: node %q ipv4: %w", n.Name, err)
	}
	if n.IPv6, err = netip.ParseAddr(v6); err != nil {
		return n, fmt.Errorf("store: node %q ipv6: %w", n.Name, err)
	}
	if ep != "" {
		if n.Endpoint, err = netip.ParseAddrPort(ep); err != nil {
			return n, fmt.Errorf("store: node %q endpoint: %w", n.Name, err)
		}
	}
	if err := json.Unmarshal([]byte(tags), &n.Tags); err != nil {
		return n, fmt.Errorf("store: node %q tags: %w", n.Name, err)
	}
	n.Created, n.LastSeen = time.Unix(0, created), time.Unix(0, seen)
	if revoked != 0 {
		n.RevokedAt = time.Unix(0, revoked)
	}
	return n, nil
}

// Node implements Store.
func (s *SQLite) Node(ctx context.Context, name string) (Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("%w: node %q", ErrNotFound, name)
	}
	if err != nil {
		return n, fmt.Errorf("store: read node %q: %w", name, err)
	}
	return n, nil
}

// Nodes implements Store.
func (s *SQLite) Nodes(ctx context.Context) ([]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list nodes: %w", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list nodes: %w", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list nodes: %w", err)
	}
	return out, nil
}

// SetEndpoint implements Store.
func (s *SQLite) SetEndpoint(ctx context.Context, name string, ep netip.AddrPort) (uint64, bool, error) {
	var version uint64
	var changed bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		var revoked int64
		err := tx.QueryRowContext(ctx, `SELECT endpoint, revoked_at FROM nodes WHERE name = ?`, name).Scan(&cur, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: node %q", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("store: read endpoint: %w", err)
		}
		if revoked != 0 {
			return fmt.Errorf("%w: %q", ErrRevoked, name)
		}
		if cur == addrPortString(ep) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET endpoint = ? WHERE name = ?`, addrPortString(ep), name); err != nil {
			return fmt.Errorf("store: set endpoint: %w", err)
		}
		changed = true
		version, err = logEvent(ctx, tx, name, EventEndpoint)
		return err
	})
	return version, changed, err
}

// TouchLastSeen implements Store.
func (s *SQLite) TouchLastSeen(ctx context.Context, name string, t time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET last_seen = ? WHERE name = ?`, t.UnixNano(), name); err != nil {
		return fmt.Errorf("store: touch %q: %w", name, err)
	}
	return nil
}

// Revoke implements Store.
func (s *SQLite) Revoke(ctx context.Context, name string, now time.Time) (uint64, []Serial, error) {
	var version uint64
	var serials []Serial
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var revoked int64
		err := tx.QueryRowContext(ctx, `SELECT revoked_at FROM nodes WHERE name = ?`, name).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: node %q", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("store: read node: %w", err)
		}
		if revoked != 0 {
			return fmt.Errorf("%w: %q already", ErrRevoked, name)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET revoked_at = ? WHERE name = ?`, now.UnixNano(), name); err != nil {
			return fmt.Errorf("store: revoke: %w", err)
		}
		// A revoked node serves nothing: its service names are free for
		// another node to publish.
		if _, err := tx.ExecContext(ctx, `DELETE FROM services WHERE node = ?`, name); err != nil {
			return fmt.Errorf("store: release services of %q: %w", name, err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT serial, expires FROM serials WHERE node = ? AND expires > ?`, name, now.UnixNano())
		if err != nil {
			return fmt.Errorf("store: list serials: %w", err)
		}
		for rows.Next() {
			var sr Serial
			var exp int64
			if err := rows.Scan(&sr.Serial, &exp); err != nil {
				rows.Close()
				return fmt.Errorf("store: list serials: %w", err)
			}
			sr.Node, sr.Expires = name, time.Unix(0, exp)
			serials = append(serials, sr)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("store: list serials: %w", err)
		}
		version, err = logEvent(ctx, tx, name, EventRevoke)
		return err
	})
	return version, serials, err
}

// RecordSerial implements Store. Expired serials are pruned on the way, as
// nobody needs them any more.
func (s *SQLite) RecordSerial(ctx context.Context, sr Serial) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO serials (serial, node, expires) VALUES (?, ?, ?)`,
			sr.Serial, sr.Node, sr.Expires.UnixNano()); err != nil {
			return fmt.Errorf("store: record serial: %w", err)
		}
		if err := setNodeKey(ctx, tx, sr.Node, sr.Key); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM serials WHERE node = ? AND expires < ?`,
			sr.Node, time.Now().Add(-time.Hour).UnixNano()); err != nil {
			return fmt.Errorf("store: prune serials: %w", err)
		}
		return nil
	})
}

// revokedSerialsQuery runs on every netmap stream open, so it must cost
// O(revoked nodes), not O(serials): CROSS JOIN makes SQLite start from the
// few revoked nodes (index nodes_revoked) and look their serials up by node.
// With a plain JOIN the planner walked every serial in order to skip the
// sort, about 5 ms at 10,000 nodes on the store's one connection, which
// 10,000 streams opening at once turned into minutes.
const revokedSerialsQuery = `SELECT s.serial FROM nodes n CROSS JOIN serials s ON s.node = n.name WHERE n.revoked_at != 0 AND s.expires > ? ORDER BY s.serial`

// RevokedSerials implements Store.
func (s *SQLite) RevokedSerials(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, revokedSerialsQuery, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: revoked serials: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var sr string
		if err := rows.Scan(&sr); err != nil {
			return nil, fmt.Errorf("store: revoked serials: %w", err)
		}
		out = append(out, sr)
	}
	return out, rows.Err()
}

// Version implements Store.
func (s *SQLite) Version(ctx context.Context) (uint64, error) {
	var v uint64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE((SELECT value FROM meta WHERE key = 'version'), 0)`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: version: %w", err)
	}
	return v, nil
}

// EventsSince implements Store.
func (s *SQLite) EventsSince(ctx context.Context, v uint64) ([]Event, bool, error) {
	var oldest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(version) FROM events`).Scan(&oldest); err != nil {
		return nil, false, fmt.Errorf("store: oldest event: %w", err)
	}
	cur, err := s.Version(ctx)
	if err != nil {
		return nil, false, err
	}
	if v > cur {
		return nil, false, nil // a version from the future: this log does not know it
	}
	if v == cur {
		return nil, true, nil
	}
	if !oldest.Valid || uint64(oldest.Int64) > v+1 {
		return nil, false, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT version, node, kind FROM events WHERE version > ? ORDER BY version`, v)
	if err != nil {
		return nil, false, fmt.Errorf("store: events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.Version, &e.Node, &e.Kind); err != nil {
			return nil, false, fmt.Errorf("store: events: %w", err)
		}
		out = append(out, e)
	}
	return out, true, rows.Err()
}

func addrPortString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
