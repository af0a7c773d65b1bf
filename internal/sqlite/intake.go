package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Intake writes an accepted request's claims, queued record and message
// in one write (build.Intake): one transaction, or one savepoint of the
// writer's group commit, where the separate calls took three or four.
// Nothing of it is written unless all of it is, so the record and the
// message of a request never part. It is safe for concurrent use.
type Intake struct {
	q      *Queue
	claims *Idempotency
	recs   *Records
}

// NewIntake returns the intake of q, claims and recs, which must be of one
// database.
func NewIntake(q *Queue, claims *Idempotency, recs *Records) (*Intake, error) {
	if q.db != claims.db || q.db != recs.db {
		return nil, errors.New("sqlite intake: the queue, claims and records are of different databases")
	}
	return &Intake{q: q, claims: claims, recs: recs}, nil
}

// Enqueue implements build.Intake.
func (in *Intake) Enqueue(ctx context.Context, req build.Request, claims []string, ttl time.Duration) (build.ID, error) {
	owner, _, err := in.enqueue(ctx, req, claims, ttl, false, time.Time{})
	return owner, err
}

// EnqueueSuperseding implements build.Intake: the superseded records end
// in the request's own write, read and written under its write lock, so
// no dispatcher's launch claim comes between (build.WaitingSuperseded
// leaves out those it made before). Nothing of it is written unless all of
// it is.
func (in *Intake) EnqueueSuperseding(ctx context.Context, req build.Request, claims []string, ttl time.Duration, now time.Time) (build.ID, []build.ID, error) {
	return in.enqueue(ctx, req, claims, ttl, true, now)
}

func (in *Intake) enqueue(ctx context.Context, req build.Request, claims []string, ttl time.Duration, supersede bool, at time.Time) (build.ID, []build.ID, error) {
	if err := build.ValidateIntake(req, claims, ttl); err != nil {
		return "", nil, fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	body, err := build.Encode(req)
	if err != nil {
		return "", nil, fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	db := in.q.db
	var owner build.ID
	var superseded []build.ID
	var supersedeErr error
	var changed, sent bool
	err = db.write(ctx, func(tx *Tx) error {
		now := nanos(db.now())
		owner, superseded, supersedeErr = req.BuildID, nil, nil
		for _, key := range claims {
			o, err := claimTx(ctx, db, tx, key, owner, ttl, now)
			if err != nil {
				return fmt.Errorf("claim %s: %w", key, err)
			}
			owner = o
		}
		if owner != req.BuildID {
			return nil // a redelivery: the claims only
		}
		var err error
		if changed, err = in.recs.saveTx(ctx, tx, build.RecordFor(req), nil); err != nil {
			return fmt.Errorf("record %s: %w", req.BuildID, err)
		}
		sent, err = in.q.sendTx(ctx, tx, []outgoing{{group: req.LockKey(), dedupID: req.DedupID(), body: body}}, now)
		if err != nil || !supersede {
			return err
		}
		// A failure to supersede (a stored record that does not decode)
		// must not refuse the request: it costs build time only, as it
		// did when superseding came after the write. Its own savepoint
		// undoes it alone.
		if _, err := tx.ExecContext(ctx, "SAVEPOINT supersede"); err != nil {
			return err
		}
		if superseded, supersedeErr = in.supersedeTx(ctx, tx, build.RecordFor(req), at); supersedeErr != nil {
			superseded = nil
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO supersede"); err != nil {
				return err
			}
		}
		changed = changed || len(superseded) > 0
		_, err = tx.ExecContext(ctx, "RELEASE supersede")
		return err
	})
	if err != nil {
		return "", nil, fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	if changed {
		db.eventsWritten()
	}
	if sent {
		db.wake.notify()
	}
	if supersedeErr != nil {
		return owner, nil, fmt.Errorf("enqueue %s: supersede the older requests of %s: %w", req.BuildID, req.LockKey(), supersedeErr)
	}
	return owner, superseded, nil
}

// supersedeTx ends, in tx, the waiting records of accepted's lock key that
// accepted, just saved in tx, makes unnecessary (build.WaitingSuperseded).
// superseded is reset on a retry of the write's function.
func (in *Intake) supersedeTx(ctx context.Context, tx *Tx, accepted build.Record, now time.Time) (superseded []build.ID, err error) {
	if !accepted.SupersedesOlder() {
		return nil, nil
	}
	list, versions, err := in.recs.unfinishedTx(ctx, tx, accepted.LockKey())
	if err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", accepted.LockKey(), err)
	}
	newest, ended := build.WaitingSuperseded(list, accepted)
	for _, r := range ended {
		if err := r.Supersede(now, newest.BuildID); err != nil {
			return nil, err
		}
		if err := in.recs.writeEndedTx(ctx, tx, r, versions[r.BuildID]); err != nil {
			return nil, fmt.Errorf("end %s: %w", r.BuildID, err)
		}
		superseded = append(superseded, r.BuildID)
	}
	return superseded, nil
}
