package build

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Intake writes what an accepted request needs before it is answered: the
// idempotency claims that make a redelivery find it, its queued record and
// its message. Enqueue claims each of claims, in order, for the build that
// owns the ones before it (req.BuildID to begin with, else the earlier
// build that holds a claim, as Idempotency.Claim answers), and returns the
// owner. When the owner is req.BuildID, the request is new: Enqueue has
// also saved RecordFor(req) and published req. Otherwise it wrote nothing
// but the claims, and the caller answers with the owner's build. An
// invalid request gives ErrInvalid before anything is written.
//
// The embedded store does it all in one write (sqlite.Intake); StepIntake
// does it in separate calls, for a backend whose queue is not in its
// database (SQS beside DynamoDB): a failure there leaves the claims and
// perhaps the record, which the caller's retry finds (the record queued
// under an ID nobody was given, published again by the redelivery).
//
// EnqueueSuperseding is Enqueue that, when the request is new, also ends
// superseded the waiting requests of its lock key that it makes
// unnecessary, as supersede.Older does for a project whose supersede
// policy is Queued only (WaitingSuperseded decides; each record ends as
// Records.EndWaiting ends it, its event written): it returns their build
// IDs, the request's own among them when a newer waiting request of its
// key exists. A redelivery, a rebuild and a retry supersede nothing. The
// embedded store does it in Enqueue's one write; StepIntake after it, in
// separate calls. An error with an owner means the request was accepted
// but superseding failed (it costs build time only: the older requests
// run); an error without one, that nothing of the request was accepted.
type Intake interface {
	Enqueue(ctx context.Context, req Request, claims []string, ttl time.Duration) (ID, error)
	EnqueueSuperseding(ctx context.Context, req Request, claims []string, ttl time.Duration, now time.Time) (ID, []ID, error)
}

// StepIntake is Intake in separate calls to the three ports.
type StepIntake struct {
	Idempotency Idempotency
	Records     interface {
		Save(ctx context.Context, r Record) error
		// Unfinished and EndWaiting serve EnqueueSuperseding: see
		// Records.
		Unfinished(ctx context.Context, key string) ([]Record, error)
		EndWaiting(ctx context.Context, r Record) error
	}
	Queue interface {
		Publish(ctx context.Context, reqs ...Request) error
	}
}

// Enqueue implements Intake.
func (s StepIntake) Enqueue(ctx context.Context, req Request, claims []string, ttl time.Duration) (ID, error) {
	if err := ValidateIntake(req, claims, ttl); err != nil {
		return "", err
	}
	owner := req.BuildID
	for _, key := range claims {
		o, err := s.Idempotency.Claim(ctx, key, owner, ttl)
		if err != nil {
			return "", err
		}
		owner = o
	}
	if owner != req.BuildID {
		return owner, nil
	}
	if err := s.Records.Save(ctx, RecordFor(req)); err != nil {
		return "", fmt.Errorf("record %s: %w", req.BuildID, err)
	}
	if err := s.Queue.Publish(ctx, req); err != nil {
		return "", err
	}
	return owner, nil
}

// EnqueueSuperseding implements Intake: Enqueue, then the lock key's
// unfinished records read and the superseded ones ended one by one. Two
// requests accepted at once each record themselves before they read, so at
// least one of them sees the other and ends the older (see
// supersede.Older). A record EndWaiting refuses (a dispatcher began to
// launch it meanwhile, or it ended) is left as it is.
func (s StepIntake) EnqueueSuperseding(ctx context.Context, req Request, claims []string, ttl time.Duration, now time.Time) (ID, []ID, error) {
	owner, err := s.Enqueue(ctx, req, claims, ttl)
	if err != nil || owner != req.BuildID {
		return owner, nil, err
	}
	accepted := RecordFor(req)
	if !accepted.SupersedesOlder() {
		return owner, nil, nil
	}
	list, err := s.Records.Unfinished(ctx, req.LockKey())
	if err != nil {
		return owner, nil, fmt.Errorf("supersede the older requests of %s: %w", req.LockKey(), err)
	}
	newest, ended := WaitingSuperseded(list, accepted)
	var superseded []ID
	var errs []error
	for _, r := range ended {
		if err := r.Supersede(now, newest.BuildID); err != nil {
			errs = append(errs, err)
			continue
		}
		switch err := s.Records.EndWaiting(ctx, r); {
		case err == nil:
			superseded = append(superseded, r.BuildID)
		case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
		default:
			errs = append(errs, fmt.Errorf("end %s: %w", r.BuildID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return owner, superseded, fmt.Errorf("supersede the older requests of %s: %w", req.LockKey(), err)
	}
	return owner, superseded, nil
}

// ValidateIntake is what every Intake refuses with ErrInvalid: an invalid
// request or one without build ID, an empty claim key, a claim ttl that is
// not positive.
func ValidateIntake(req Request, claims []string, ttl time.Duration) error {
	if err := req.Validate(); err != nil {
		return err
	}
	if req.BuildID == "" {
		return fmt.Errorf("%w: request without build id", ErrInvalid)
	}
	for _, key := range claims {
		if key == "" {
			return fmt.Errorf("%w: empty claim key", ErrInvalid)
		}
	}
	if len(claims) > 0 && ttl <= 0 {
		return fmt.Errorf("%w: claim ttl %s is not positive", ErrInvalid, ttl)
	}
	return nil
}
