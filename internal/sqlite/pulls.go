package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/decap-ci/decap/internal/build"
)

// PullRequests stores what Decap knows of pull requests
// (build.PullRequests), one row per pull request. It is safe for
// concurrent use.
type PullRequests struct {
	db *DB
}

// NewPullRequests returns the pull requests stored in db.
func NewPullRequests(db *DB) *PullRequests {
	return &PullRequests{db: db}
}

// Get returns the pull request's entry; build.ErrNotFound if none.
func (s *PullRequests) Get(ctx context.Context, team, project string, number int) (build.PullRequestState, error) {
	var doc []byte
	err := s.db.rdb.QueryRowContext(ctx, `SELECT doc FROM pull_requests WHERE team = ? AND project = ? AND number = ?`,
		team, project, number).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return build.PullRequestState{}, fmt.Errorf("pull request %s#%d: %w", build.ProjectKey(team, project), number, build.ErrNotFound)
	}
	if err != nil {
		return build.PullRequestState{}, fmt.Errorf("get pull request %s#%d: %w", build.ProjectKey(team, project), number, classify(err))
	}
	var p build.PullRequestState
	if err := json.Unmarshal(doc, &p); err != nil {
		return build.PullRequestState{}, fmt.Errorf("decode pull request %s#%d: %w", build.ProjectKey(team, project), number, err)
	}
	return p, nil
}

// Put stores p over version p.Version-1 (or as the first, version 1),
// reading the stored version in the same write transaction;
// build.ErrConflict otherwise.
func (s *PullRequests) Put(ctx context.Context, p build.PullRequestState) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("put pull request: %w", err)
	}
	doc, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("put pull request %s: %w", p.LockKey(), err)
	}
	open := 1
	if p.Closed {
		open = 0
	}
	err = s.db.write(ctx, func(tx *Tx) error {
		var stored int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM pull_requests WHERE team = ? AND project = ? AND number = ?`,
			p.Team, p.Project, p.Number).Scan(&stored)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if stored != p.Version-1 {
			return fmt.Errorf("%w: stored version is %d, not %d", build.ErrConflict, stored, p.Version-1)
		}
		_, err = tx.ExecContext(ctx, `
INSERT INTO pull_requests (team, project, number, open, version, doc) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (team, project, number) DO UPDATE SET open = excluded.open, version = excluded.version, doc = excluded.doc`,
			p.Team, p.Project, p.Number, open, p.Version, doc)
		return err
	})
	if err != nil {
		return fmt.Errorf("put pull request %s: %w", p.LockKey(), err)
	}
	return nil
}

// ListOpen returns the project's open pull requests by number.
func (s *PullRequests) ListOpen(ctx context.Context, team, project string) ([]build.PullRequestState, error) {
	rows, err := s.db.rdb.QueryContext(ctx,
		`SELECT doc FROM pull_requests WHERE team = ? AND project = ? AND open = 1 ORDER BY number`, team, project)
	if err != nil {
		return nil, fmt.Errorf("list pull requests of %s: %w", build.ProjectKey(team, project), classify(err))
	}
	defer rows.Close()
	var out []build.PullRequestState
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("list pull requests of %s: %w", build.ProjectKey(team, project), classify(err))
		}
		var p build.PullRequestState
		if err := json.Unmarshal(doc, &p); err != nil {
			return nil, fmt.Errorf("decode a pull request of %s: %w", build.ProjectKey(team, project), err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pull requests of %s: %w", build.ProjectKey(team, project), classify(err))
	}
	return out, nil
}
