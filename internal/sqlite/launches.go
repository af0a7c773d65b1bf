package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Launches writes a launch's claim and its start in one write each
// (build.Launches): one transaction, or one savepoint of the writer's
// group commit, where the separate calls took two and three. It is safe
// for concurrent use.
type Launches struct{ oneWrite }

// NewLaunches returns the launches of locks, recs and q, which must be of
// one database.
func NewLaunches(locks *Locks, recs *Records, q *Queue) (*Launches, error) {
	w, err := newOneWrite("launches", locks, recs, q)
	if err != nil {
		return nil, err
	}
	return &Launches{w}, nil
}

// oneWrite is what a combined write (Launches, Ends) works on: the one
// database of the locks, records and queue it writes, and the records.
type oneWrite struct {
	db   *DB
	recs *Records
}

func newOneWrite(what string, locks *Locks, recs *Records, q *Queue) (oneWrite, error) {
	if locks.db != recs.db || locks.db != q.db {
		return oneWrite{}, fmt.Errorf("sqlite %s: the locks, records and queue are of different databases", what)
	}
	return oneWrite{db: locks.db, recs: recs}, nil
}

// Claim implements build.Launches.
func (s *Launches) Claim(ctx context.Context, l build.Lease, cap int, rec build.Record) error {
	if l.Key == "" || l.BuildID == "" || rec.BuildID != l.BuildID || !rec.Status.Valid() {
		return fmt.Errorf("claim the launch of %s: %w: empty key, build ids that differ, or unknown status %q", l.BuildID, build.ErrInvalid, rec.Status)
	}
	db := s.db
	pre, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("claim the launch of %s: %w", l.BuildID, err)
	}
	changed := false
	err = db.write(ctx, func(tx *Tx) error {
		if err := acquireTx(ctx, db, tx, l, cap, nanos(db.now())); err != nil {
			return fmt.Errorf("acquire lock %s: %w", l.Key, err)
		}
		var err error
		changed, err = s.recs.saveTx(ctx, tx, rec, pre)
		return err
	})
	if err != nil {
		return fmt.Errorf("claim the launch of %s: %w", l.BuildID, err)
	}
	if changed {
		db.eventsWritten()
	}
	return nil
}

// Started implements build.Launches.
func (s *Launches) Started(ctx context.Context, key string, until time.Time, rec build.Record, receipt string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Valid() {
		return false, fmt.Errorf("record the start of %s: %w: empty key or build id, or unknown status %q", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	db := s.db
	pre, err := encodeRecord(rec)
	if err != nil {
		return false, fmt.Errorf("record the start of %s: %w", rec.BuildID, err)
	}
	var changed, deleted, more bool
	err = db.write(ctx, func(tx *Tx) error {
		if err := extendTx(ctx, tx, key, rec.BuildID, until, nanos(db.now())); err != nil {
			return fmt.Errorf("extend lock %s: %w", key, err)
		}
		var err error
		if changed, err = s.recs.saveTx(ctx, tx, rec, pre); err != nil {
			return err
		}
		more, err = deleteTx(ctx, tx, receipt)
		switch {
		case errors.Is(err, build.ErrNotFound):
			return nil // received again: that delivery settles it
		case err != nil:
			return fmt.Errorf("delete message: %w", err)
		}
		deleted = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record the start of %s: %w", rec.BuildID, err)
	}
	if changed {
		db.eventsWritten()
	}
	if more {
		db.wake.notify() // the group's next message is receivable
	}
	return deleted, nil
}
