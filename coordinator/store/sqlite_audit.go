package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// maxAuditQuery bounds one audit query.
const maxAuditQuery = 10_000

// AppendAudit implements Store. An event is a duplicate, and skipped,
// only when the node already sent one with the same sequence and the
// same content; one that reuses a sequence with other content is kept as
// the next variant. Each event costs a few index lookups, however many
// variants its sequence has.
func (s *SQLite) AppendAudit(ctx context.Context, node string, received time.Time, evs []api.AuditEvent) (AuditAppend, error) {
	var res AuditAppend
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, e := range evs {
			res.Stored = max(res.Stored, e.Seq)
			stored, reused, err := appendAuditEvent(ctx, tx, node, received, e)
			if err != nil {
				return err
			}
			if stored && reused {
				res.Reused++
			}
		}
		return nil
	})
	if err != nil {
		return AuditAppend{}, err
	}
	return res, nil
}

// appendAuditEvent stores e unless it is a duplicate, and says whether
// it did and whether its sequence held another event already.
func appendAuditEvent(ctx context.Context, tx *sql.Tx, node string, received time.Time, e api.AuditEvent) (stored, reused bool, err error) {
	fp := auditFingerprint(e)
	// An event stored before fingerprints has none, and at most one per
	// sequence (the key was node and sequence then): compared whole.
	dup, err := legacyDuplicate(ctx, tx, node, e, fp)
	if err != nil || dup {
		return false, false, err
	}
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(variant), -1) FROM audit WHERE node = ? AND seq = ?`,
		node, e.Seq).Scan(&last); err != nil {
		return false, false, fmt.Errorf("store: look up audit event: %w", err)
	}
	// The next variant follows the highest still stored, not their count:
	// retention may have deleted the first ones.
	r, err := tx.ExecContext(ctx, `INSERT INTO audit
		(node, seq, variant, time, caller, service, method, tool, decision, reason, policy, latency, digest, session, received, fp)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node, seq, fp) DO NOTHING`,
		node, e.Seq, last+1, e.Time.UnixNano(), e.Caller, e.Service, e.Method, e.Tool, e.Decision, e.Reason,
		e.Policy, e.LatencyUS, e.ArgsDigest, e.Session, received.UnixNano(), fp)
	if err != nil {
		return false, false, fmt.Errorf("store: insert audit event: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, false, fmt.Errorf("store: insert audit event: %w", err)
	}
	return n == 1, last >= 0, nil // none inserted: the same fingerprint is stored
}

// legacyDuplicate reports whether one of node's events under e's
// sequence that have no fingerprint is e, whose fingerprint is want. A
// store from before the variant key holds at most one such event per
// sequence.
func legacyDuplicate(ctx context.Context, tx *sql.Tx, node string, e api.AuditEvent, want []byte) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT time, caller, service, method, tool, decision, reason, policy, latency, digest, session
		FROM audit WHERE node = ? AND seq = ? AND fp IS NULL`, node, e.Seq)
	if err != nil {
		return false, fmt.Errorf("store: look up audit event: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var o api.AuditEvent
		var t int64
		if err := rows.Scan(&t, &o.Caller, &o.Service, &o.Method, &o.Tool, &o.Decision, &o.Reason,
			&o.Policy, &o.LatencyUS, &o.ArgsDigest, &o.Session); err != nil {
			return false, fmt.Errorf("store: look up audit event: %w", err)
		}
		o.Seq, o.Time = e.Seq, time.Unix(0, t)
		if bytes.Equal(auditFingerprint(o), want) {
			return true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("store: look up audit event: %w", err)
	}
	return false, nil
}

// auditFingerprint is a digest of what a node says in an event: its
// sequence, its time to the nanosecond (not the zone) and every field
// but the node's name, which the coordinator sets. Each string goes in
// with its length, so no two events share an encoding.
func auditFingerprint(e api.AuditEvent) []byte {
	h := sha256.New()
	var b []byte
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, e.Policy)
	b = binary.BigEndian.AppendUint64(b, uint64(e.LatencyUS))
	for _, f := range []string{e.Caller, e.Service, e.Method, e.Tool, e.Decision, e.Reason, e.ArgsDigest, e.Session} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	h.Write(b)
	return h.Sum(nil)
}

// Audit implements Store.
func (s *SQLite) Audit(ctx context.Context, q api.AuditQuery) ([]api.AuditEvent, error) {
	var where []string
	var args []any
	for col, v := range map[string]string{"caller": q.Caller, "service": q.Service, "tool": q.Tool, "decision": q.Decision} {
		if v != "" {
			where = append(where, col+" = ?")
			args = append(args, v)
		}
	}
	limit := q.Limit
	if limit <= 0 || limit > maxAuditQuery {
		limit = maxAuditQuery
	}
	query := `SELECT node, seq, variant, time, received, caller, service, method, tool, decision, reason, policy, latency, digest, session FROM audit`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += fmt.Sprintf(" ORDER BY time DESC, node, seq DESC, variant DESC LIMIT %d", limit)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query audit: %w", err)
	}
	defer rows.Close()
	var out []api.AuditEvent
	for rows.Next() {
		var e api.AuditEvent
		var t, recv int64
		if err := rows.Scan(&e.Node, &e.Seq, &e.Variant, &t, &recv, &e.Caller, &e.Service, &e.Method, &e.Tool, &e.Decision, &e.Reason,
			&e.Policy, &e.LatencyUS, &e.ArgsDigest, &e.Session); err != nil {
			return nil, fmt.Errorf("store: query audit: %w", err)
		}
		e.Time, e.Received = time.Unix(0, t), time.Unix(0, recv)
		out = append(out, e)
	}
	return out, rows.Err()
}

// pruneBatch is how many events one transaction of PruneAudit deletes, so
// that nodes shipping events wait for a short transaction at most.
const pruneBatch = 10_000

// PruneAudit implements Store, in short transactions, by the time each
// event was received. The file keeps its size: the pages freed are reused
// by the events that come next.
func (s *SQLite) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, `DELETE FROM audit WHERE rowid IN
			(SELECT rowid FROM audit WHERE received < ? LIMIT ?)`, before.UnixNano(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("store: prune audit: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("store: prune audit: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
