package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AddPolicy implements Store.
func (s *SQLite) AddPolicy(ctx context.Context, p PolicyVersion) (uint64, uint64, error) {
	var pv, nv uint64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx,
			`INSERT INTO policies (version, source, filename, author, created, note)
			 VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM policies), ?, ?, ?, ?, ?) RETURNING version`,
			p.Source, p.Filename, p.Author, p.Created.UnixNano(), p.Note).Scan(&pv)
		if err != nil {
			return fmt.Errorf("store: insert policy: %w", err)
		}
		nv, err = logEvent(ctx, tx, "", EventPolicy)
		return err
	})
	return pv, nv, err
}

// Policy implements Store.
func (s *SQLite) Policy(ctx context.Context, version uint64) (PolicyVersion, error) {
	q := `SELECT version, source, filename, author, created, note FROM policies WHERE version = ?`
	args := []any{version}
	if version == 0 {
		q = `SELECT version, source, filename, author, created, note FROM policies ORDER BY version DESC LIMIT 1`
		args = nil
	}
	var p PolicyVersion
	var created int64
	err := s.db.QueryRowContext(ctx, q, args...).Scan(&p.Version, &p.Source, &p.Filename, &p.Author, &created, &p.Note)
	if errors.Is(err, sql.ErrNoRows) {
		if version == 0 {
			return p, fmt.Errorf("%w: no policy has been applied", ErrNotFound)
		}
		return p, fmt.Errorf("%w: policy version %d", ErrNotFound, version)
	}
	if err != nil {
		return p, fmt.Errorf("store: read policy: %w", err)
	}
	p.Created = time.Unix(0, created)
	return p, nil
}

// PolicyHistory implements Store.
func (s *SQLite) PolicyHistory(ctx context.Context) ([]PolicyVersion, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version, filename, author, created, note FROM policies ORDER BY version DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: policy history: %w", err)
	}
	defer rows.Close()
	var out []PolicyVersion
	for rows.Next() {
		var p PolicyVersion
		var created int64
		if err := rows.Scan(&p.Version, &p.Filename, &p.Author, &created, &p.Note); err != nil {
			return nil, fmt.Errorf("store: policy history: %w", err)
		}
		p.Created = time.Unix(0, created)
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetServices implements Store.
func (s *SQLite) SetServices(ctx context.Context, node string, svcs []Service) (uint64, bool, error) {
	var version uint64
	var changed bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		cur, err := servicesWhere(ctx, tx, `WHERE node = ?`, node)
		if err != nil {
			return err
		}
		if sameServices(cur, svcs) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM services WHERE node = ?`, node); err != nil {
			return fmt.Errorf("store: replace services: %w", err)
		}
		for _, sv := range svcs {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT node FROM services WHERE name = ?`, sv.Name).Scan(&owner)
			if err == nil {
				return fmt.Errorf("%w: %q is published by node %q", ErrServiceTaken, sv.Name, owner)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("store: look up service: %w", err)
			}
			tags, err := json.Marshal(nonNil(sv.Tags))
			if err != nil {
				return fmt.Errorf("store: encode tags: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO services (name, node, tags) VALUES (?, ?, ?)`, sv.Name, node, string(tags)); err != nil {
				return fmt.Errorf("store: insert service %q: %w", sv.Name, err)
			}
		}
		changed = true
		version, err = logEvent(ctx, tx, node, EventServices)
		return err
	})
	return version, changed, err
}

// Services implements Store.
func (s *SQLite) Services(ctx context.Context) ([]Service, error) {
	return servicesWhere(ctx, s.db, ``)
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func servicesWhere(ctx context.Context, db querier, where string, args ...any) ([]Service, error) {
	rows, err := db.QueryContext(ctx, `SELECT name, node, tags FROM services `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list services: %w", err)
	}
	defer rows.Close()
	var out []Service
	for rows.Next() {
		var sv Service
		var tags string
		if err := rows.Scan(&sv.Name, &sv.Node, &tags); err != nil {
			return nil, fmt.Errorf("store: list services: %w", err)
		}
		if err := json.Unmarshal([]byte(tags), &sv.Tags); err != nil {
			return nil, fmt.Errorf("store: service %q tags: %w", sv.Name, err)
		}
		out = append(out, sv)
	}
	return out, rows.Err()
}

// sameServices compares two sets of services (a is sorted by name).
func sameServices(a, b []Service) bool {
	if len(a) != len(b) {
		return false
	}
	b = slices.Clone(b)
	slices.SortFunc(b, func(x, y Service) int { return strings.Compare(x.Name, y.Name) })
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].Tags, b[i].Tags) {
			return false
		}
	}
	return true
}
