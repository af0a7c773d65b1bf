package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Locks holds branch locks, which are also the slots of the concurrency cap
// (buildtest.Locks). The cap holds across every process using the database:
// Acquire counts and inserts in one BEGIN IMMEDIATE transaction. It is safe
// for concurrent use.
type Locks struct {
	db *DB
}

// NewLocks returns the locks stored in db.
func NewLocks(db *DB) *Locks {
	return &Locks{db: db}
}

// Acquire takes l.Key for l.BuildID until l.ExpiresAt together with one slot
// of cap (cap <= 0: no cap), or neither. It fails with build.ErrLocked when
// another build holds an unexpired lease on the key and with
// build.ErrCapReached when cap unexpired leases exist. Acquiring a key that
// l.BuildID already holds succeeds and keeps the later of its expiry and
// l.ExpiresAt: a re-acquire never shortens a lease.
func (s *Locks) Acquire(ctx context.Context, l build.Lease, cap int) error {
	if l.Key == "" || l.BuildID == "" {
		return fmt.Errorf("acquire lock %s: %w: empty key or build id", l.Key, build.ErrInvalid)
	}
	err := s.db.write(ctx, func(tx *Tx) error {
		return acquireTx(ctx, s.db, tx, l, cap, nanos(s.db.now()))
	})
	if err != nil {
		return fmt.Errorf("acquire lock %s: %w", l.Key, err)
	}
	return nil
}

// acquireTx is Acquire within tx, at now (Unix nanoseconds). It purges
// expired leases now and then (DB.locksPurge), as claimTx purges claims.
func acquireTx(ctx context.Context, db *DB, tx *Tx, l build.Lease, cap int, now int64) error {
	// Expired leases hold nothing (every read of the table but Release's
	// skips them, and Release frees them): purging them changes no answer.
	if limit, due := db.locksPurge.due(); due {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM locks WHERE key IN (SELECT key FROM locks WHERE expires_at <= ? LIMIT ?)`, now, limit); err != nil {
			return err
		}
	}
	var holder string
	err := tx.QueryRowContext(ctx, `SELECT build_id FROM locks WHERE key = ? AND expires_at > ?`, l.Key, now).Scan(&holder)
	switch {
	case err == nil && holder == string(l.BuildID):
		_, err := tx.ExecContext(ctx, `UPDATE locks SET expires_at = max(expires_at, ?) WHERE key = ?`, nanos(l.ExpiresAt), l.Key)
		return err
	case err == nil:
		return fmt.Errorf("%w by build %s", build.ErrLocked, holder)
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if cap > 0 {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM locks WHERE expires_at > ?`, now).Scan(&n); err != nil {
			return err
		}
		if n >= cap {
			return fmt.Errorf("%w (%d)", build.ErrCapReached, cap)
		}
	}
	_, err = tx.ExecContext(ctx, `
INSERT INTO locks (key, build_id, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET build_id = excluded.build_id, owner = excluded.owner,
	acquired_at = excluded.acquired_at, expires_at = excluded.expires_at, waiter = ''`,
		l.Key, string(l.BuildID), l.Owner, nanos(l.AcquiredAt), nanos(l.ExpiresAt))
	return err
}

// Extend moves the expiry of key to until, if that is later, when id holds
// an unexpired lease on it; it never shortens a lease. build.ErrNotFound when
// id holds no unexpired lease on key.
func (s *Locks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	err := s.db.write(ctx, func(tx *Tx) error {
		return extendTx(ctx, tx, key, id, until, nanos(s.db.now()))
	})
	if err != nil {
		return fmt.Errorf("extend lock %s: %w", key, err)
	}
	return nil
}

// extendTx is Extend within tx, at now (Unix nanoseconds).
func extendTx(ctx context.Context, tx *Tx, key string, id build.ID, until time.Time, now int64) error {
	res, err := tx.ExecContext(ctx, `UPDATE locks SET expires_at = max(expires_at, ?) WHERE key = ? AND build_id = ? AND expires_at > ?`,
		nanos(until), key, string(id), now)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("%w for build %s", build.ErrNotFound, id)
	}
	return nil
}

// Release drops key if id holds it and returns the lease's waiter (see
// Await). A key that nobody holds, or whose lease expired, is not an
// error (an expired lease is dropped, and its waiter returned: the request
// waits for the key, not for that build); a key another build holds gives
// build.ErrConflict and stays held.
func (s *Locks) Release(ctx context.Context, key string, id build.ID) (string, error) {
	var waiter string
	err := s.db.write(ctx, func(tx *Tx) error {
		var err error
		waiter, err = releaseTx(ctx, tx, key, id, nanos(s.db.now()))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("release lock %s: %w", key, err)
	}
	return waiter, nil
}

// releaseTx is Release within tx, at now (Unix nanoseconds): one
// statement when the lease is id's or expired, as a build's end finds it.
func releaseTx(ctx context.Context, tx *Tx, key string, id build.ID, now int64) (waiter string, err error) {
	// Ours, or an expired lease of another build: either way free.
	err = tx.QueryRowContext(ctx, `DELETE FROM locks WHERE key = ? AND (build_id = ? OR expires_at <= ?) RETURNING waiter`,
		key, string(id), now).Scan(&waiter)
	if !errors.Is(err, sql.ErrNoRows) {
		return waiter, err
	}
	// Nothing freed: no lease at all, or another build's live one.
	var holder string
	err = tx.QueryRowContext(ctx, `SELECT build_id FROM locks WHERE key = ?`, key).Scan(&holder)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", err
	}
	return "", fmt.Errorf("%w: held by build %s", build.ErrConflict, holder)
}

// Await records waiter on key's unexpired lease, replacing an earlier one;
// build.ErrNotFound when nobody holds an unexpired lease on key.
func (s *Locks) Await(ctx context.Context, key, waiter string) error {
	err := s.db.write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE locks SET waiter = ? WHERE key = ? AND expires_at > ?`, waiter, key, nanos(s.db.now()))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return build.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("await lock %s: %w", key, err)
	}
	return nil
}

// ForceRelease drops key whoever holds it; build.ErrNotFound if nobody holds
// an unexpired lease on it.
func (s *Locks) ForceRelease(ctx context.Context, key string) error {
	err := s.db.write(ctx, func(tx *Tx) error {
		var expires int64
		err := tx.QueryRowContext(ctx, `DELETE FROM locks WHERE key = ? RETURNING expires_at`, key).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) || err == nil && expires <= nanos(s.db.now()) {
			return build.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("force-release lock %s: %w", key, err)
	}
	return nil
}

// List returns unexpired leases ordered by key.
func (s *Locks) List(ctx context.Context) ([]build.Lease, error) {
	rows, err := s.db.rdb.QueryContext(ctx, `
SELECT key, build_id, owner, acquired_at, expires_at FROM locks WHERE expires_at > ? ORDER BY key`, nanos(s.db.now()))
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", classify(err))
	}
	defer rows.Close()
	out := []build.Lease{}
	for rows.Next() {
		var l build.Lease
		var id string
		var acquired, expires int64
		if err := rows.Scan(&l.Key, &id, &l.Owner, &acquired, &expires); err != nil {
			return nil, fmt.Errorf("list locks: %w", classify(err))
		}
		l.BuildID, l.AcquiredAt, l.ExpiresAt = build.ID(id), fromNanos(acquired), fromNanos(expires)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list locks: %w", classify(err))
	}
	return out, nil
}
