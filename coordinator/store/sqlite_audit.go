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

// AppendAudit implements Store. An event is a duplicate, and skipped,
// only when the node already sent one with the same sequence and the
// same content; one that reuses a sequence with other content is kept as
// another variant.
func (s *SQLite) AppendAudit(ctx context.Context, node string, received time.Time, evs []api.AuditEvent) (AuditAppend, error) {
	var res AuditAppend
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, e := range evs {
			variants, dup, err := auditVariants(ctx, tx, node, e)
			if err != nil {
				return err
			}
			res.Stored = max(res.Stored, e.Seq)
			if dup {
				continue
			}
			if variants > 0 {
				res.Reused++
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO audit
				(node, seq, variant, time, caller, service, method, tool, decision, reason, policy, latency, digest, session, received)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				node, e.Seq, variants, e.Time.UnixNano(), e.Caller, e.Service, e.Method, e.Tool, e.Decision, e.Reason,
				e.Policy, e.LatencyUS, e.ArgsDigest, e.Session, received.UnixNano())
			if err != nil {
				return fmt.Errorf("store: insert audit event: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return AuditAppend{}, err
	}
	return res, nil
}

// auditVariants counts the events node already sent under e's sequence
// and reports whether one of them is e.
func auditVariants(ctx context.Context, tx *sql.Tx, node string, e api.AuditEvent) (n int, dup bool, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT time, caller, service, method, tool, decision, reason, policy, latency, digest, session
		FROM audit WHERE node = ? AND seq = ?`, node, e.Seq)
	if err != nil {
		return 0, false, fmt.Errorf("store: look up audit event: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var o api.AuditEvent
		var t int64
		if err := rows.Scan(&t, &o.Caller, &o.Service, &o.Method, &o.Tool, &o.Decision, &o.Reason,
			&o.Policy, &o.LatencyUS, &o.ArgsDigest, &o.Session); err != nil {
			return 0, false, fmt.Errorf("store: look up audit event: %w", err)
		}
		n++
		o.Seq, o.Time, o.Node = e.Seq, time.Unix(0, t), e.Node
		dup = dup || (t == e.Time.UnixNano() && o == withoutTime(e, o.Time))
	}
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("store: look up audit event: %w", err)
	}
	return n, dup, nil
}

// withoutTime is e with t for its time, so that two events compare by
// their other fields (time.Time values compare by location too).
func withoutTime(e api.AuditEvent, t time.Time) api.AuditEvent {
	e.Time = t
	return e
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
