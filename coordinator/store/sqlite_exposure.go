package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// SetExposure implements Store. A report is stored whole, as JSON: it is
// read back whole and never queried by field.
func (s *SQLite) SetExposure(ctx context.Context, r api.ExposureReport) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: encode exposure report: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO exposure (node, report) VALUES (?, ?)
		ON CONFLICT(node) DO UPDATE SET report = excluded.report`, r.Node, string(b)); err != nil {
		return fmt.Errorf("store: save exposure report of %s: %w", r.Node, err)
	}
	return nil
}

// Exposure implements Store.
func (s *SQLite) Exposure(ctx context.Context) ([]api.ExposureReport, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node, report FROM exposure ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("store: query exposure: %w", err)
	}
	defer rows.Close()
	out := []api.ExposureReport{}
	for rows.Next() {
		var node, report string
		if err := rows.Scan(&node, &report); err != nil {
			return nil, fmt.Errorf("store: query exposure: %w", err)
		}
		var r api.ExposureReport
		if err := json.Unmarshal([]byte(report), &r); err != nil {
			return nil, fmt.Errorf("store: exposure report of %s: %w", node, err)
		}
		r.Node = node
		out = append(out, r)
	}
	return out, rows.Err()
}
