package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// maxAuditQuery bounds one audit query.
const maxAuditQuery = 10_000

// AppendAudit implements Store.
func (s *SQLite) AppendAudit(ctx context.Context, node string, received time.Time, evs []api.AuditEvent) (uint64, error) {
	var stored uint64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, e := range evs {
			_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO audit
				(node, seq, time, caller, service, method, tool, decision, reason, policy, latency, digest, session, received)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				node, e.Seq, e.Time.UnixNano(), e.Caller, e.Service, e.Method, e.Tool, e.Decision, e.Reason,
				e.Policy, e.LatencyUS, e.ArgsDigest, e.Session, received.UnixNano())
			if err != nil {
				return fmt.Errorf("store: insert audit event: %w", err)
			}
		}
		return tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit WHERE node = ?`, node).Scan(&stored)
	})
	return stored, err
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
	query := `SELECT node, seq, time, caller, service, method, tool, decision, reason, policy, latency, digest, session FROM audit`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += fmt.Sprintf(" ORDER BY time DESC, node, seq DESC LIMIT %d", limit)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query audit: %w", err)
	}
	defer rows.Close()
	var out []api.AuditEvent
	for rows.Next() {
		var e api.AuditEvent
		var t int64
		if err := rows.Scan(&e.Node, &e.Seq, &t, &e.Caller, &e.Service, &e.Method, &e.Tool, &e.Decision, &e.Reason,
			&e.Policy, &e.LatencyUS, &e.ArgsDigest, &e.Session); err != nil {
			return nil, fmt.Errorf("store: query audit: %w", err)
		}
		e.Time = time.Unix(0, t)
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
