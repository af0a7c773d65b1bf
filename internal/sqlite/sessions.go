package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/decap-ci/decap/internal/build"
)

// Sessions stores the UI's signed-in sessions (buildtest.Sessions), keyed
// by the SHA-256 of the session ID. It is safe for concurrent use.
type Sessions struct {
	db *DB
}

// NewSessions returns the sessions stored in db.
func NewSessions(db *DB) *Sessions {
	return &Sessions{db: db}
}

// Create stores s unless an unexpired session has its key (build.ErrConflict).
// Expired sessions are purged as sessions are created.
func (s *Sessions) Create(ctx context.Context, sess build.Session) error {
	if err := build.ValidateSession(sess); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	err := s.db.write(ctx, func(tx *Tx) error {
		now := nanos(s.db.now())
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM sessions WHERE key IN (SELECT key FROM sessions WHERE expires_at <= ? LIMIT 100)`, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `
INSERT INTO sessions (key, binding, created_at, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET binding = excluded.binding, created_at = excluded.created_at,
	expires_at = excluded.expires_at
	WHERE sessions.expires_at <= ?`,
			sess.Key, sess.Binding, nanos(sess.CreatedAt), nanos(sess.ExpiresAt), now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: the key is taken", build.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// Get returns the unexpired session under key; build.ErrNotFound otherwise.
func (s *Sessions) Get(ctx context.Context, key string) (build.Session, error) {
	var (
		sess             build.Session
		created, expires int64
	)
	err := s.db.rdb.QueryRowContext(ctx,
		`SELECT key, binding, created_at, expires_at FROM sessions WHERE key = ? AND expires_at > ?`,
		key, nanos(s.db.now())).Scan(&sess.Key, &sess.Binding, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return build.Session{}, fmt.Errorf("session: %w", build.ErrNotFound)
	}
	if err != nil {
		return build.Session{}, fmt.Errorf("get session: %w", classify(err))
	}
	sess.CreatedAt, sess.ExpiresAt = fromNanos(created), fromNanos(expires)
	return sess, nil
}

// Delete removes the session under key, if any.
func (s *Sessions) Delete(ctx context.Context, key string) error {
	err := s.db.write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE key = ?`, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
