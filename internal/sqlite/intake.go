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
	if err := build.ValidateIntake(req, claims, ttl); err != nil {
		return "", fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	body, err := build.Encode(req)
	if err != nil {
		return "", fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	db := in.q.db
	var owner build.ID
	var changed, sent bool
	err = db.write(ctx, func(tx *Tx) error {
		now := nanos(db.now())
		owner = req.BuildID
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
		if changed, err = in.recs.saveTx(ctx, tx, build.RecordFor(req)); err != nil {
			return fmt.Errorf("record %s: %w", req.BuildID, err)
		}
		sent, err = in.q.sendTx(ctx, tx, []outgoing{{group: req.LockKey(), dedupID: req.DedupID(), body: body}}, now)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("enqueue %s: %w", req.BuildID, err)
	}
	if changed {
		db.written.fire()
	}
	if sent {
		db.wake.notify()
	}
	return owner, nil
}
