package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/decap-ci/decap/internal/build"
)

// Ends writes a build's end in one write (build.Ends): its final record,
// its lock's release and the wake-up of the request deferred behind the
// lock in one transaction, or one savepoint of the writer's group commit,
// where the separate calls took two or three. It is safe for concurrent
// use.
type Ends struct{ oneWrite }

// NewEnds returns the ends of locks, recs and q, which must be of one
// database.
func NewEnds(locks *Locks, recs *Records, q *Queue) (*Ends, error) {
	w, err := newOneWrite("ends", locks, recs, q)
	if err != nil {
		return nil, err
	}
	return &Ends{w}, nil
}

// Ended implements build.Ends.
func (s *Ends) Ended(ctx context.Context, rec build.Record, key string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Final() {
		return false, fmt.Errorf("record the end of %s: %w: empty key or build id, or status %q not final", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	db := s.db
	pre, err := encodeRecord(rec)
	if err != nil {
		return false, fmt.Errorf("record the end of %s: %w", rec.BuildID, err)
	}
	var changed, released, woke bool
	err = db.write(ctx, func(tx *Tx) error {
		var err error
		if changed, err = s.recs.saveTx(ctx, tx, rec, pre); err != nil {
			return err
		}
		now := db.now()
		waiter, err := releaseTx(ctx, tx, key, rec.BuildID, nanos(now))
		switch {
		case errors.Is(err, build.ErrConflict):
			return nil // another build holds the key: left as it is
		case err != nil:
			return fmt.Errorf("release lock %s: %w", key, err)
		}
		released = true
		if waiter == "" {
			return nil
		}
		switch err := changeVisibilityTx(ctx, tx, waiter, nanos(now)); {
		case errors.Is(err, build.ErrNotFound):
			return nil // received again meanwhile: nothing waits
		case err != nil:
			return fmt.Errorf("wake the request waiting for %s: %w", key, err)
		}
		woke = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record the end of %s: %w", rec.BuildID, err)
	}
	if changed {
		db.eventsWritten()
	}
	if woke {
		db.wake.notify()
	}
	return released, nil
}
