package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Idempotency remembers which build owns a delivery or request
// (buildtest.Idempotency). It is safe for concurrent use.
type Idempotency struct {
	db *DB
}

// NewIdempotency returns the idempotency claims stored in db.
func NewIdempotency(db *DB) *Idempotency {
	return &Idempotency{db: db}
}

// Claim records that key belongs to id for ttl unless an unexpired claim
// exists, and returns the owner: id when the claim is new (or was id's
// already), the earlier build's ID otherwise. An existing claim keeps its
// expiry. Expired claims are purged as claims are made.
func (s *Idempotency) Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	if key == "" || id == "" || ttl <= 0 {
		return "", fmt.Errorf("claim %s: %w: empty key or build id, or ttl not positive", key, build.ErrInvalid)
	}
	// A claim that holds answers without a write: its owner cannot change
	// before it expires (a dispatcher claims again what ingest claimed).
	var held string
	err := s.db.reads.queryRow(ctx, s.db.rdb, `SELECT build_id FROM idempotency WHERE key = ? AND expires_at > ?`, key, nanos(s.db.now())).Scan(&held)
	switch {
	case err == nil:
		return build.ID(held), nil
	case !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("claim %s: %w", key, classify(err))
	}
	var owner build.ID
	err = s.db.write(ctx, func(tx *Tx) error {
		var err error
		owner, err = claimTx(ctx, s.db, tx, key, id, ttl, nanos(s.db.now()))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("claim %s: %w", key, err)
	}
	return owner, nil
}

// claimTx is Claim within tx, at now (Unix nanoseconds); it purges
// expired claims now and then (DB.claimsPurge).
func claimTx(ctx context.Context, db *DB, tx *Tx, key string, id build.ID, ttl time.Duration, now int64) (build.ID, error) {
	if limit, due := db.claimsPurge.due(); due {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM idempotency WHERE key IN (SELECT key FROM idempotency WHERE expires_at <= ? LIMIT ?)`, now, limit); err != nil {
			return "", err
		}
	}
	if _, err := tx.ExecContext(ctx, `
INSERT INTO idempotency (key, build_id, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET build_id = excluded.build_id, expires_at = excluded.expires_at
	WHERE idempotency.expires_at <= ?`, key, string(id), now+int64(ttl), now); err != nil {
		return "", err
	}
	var owner string
	err := tx.QueryRowContext(ctx, `SELECT build_id FROM idempotency WHERE key = ?`, key).Scan(&owner)
	return build.ID(owner), err
}
