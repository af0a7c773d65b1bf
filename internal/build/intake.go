package build

import (
	"context"
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
type Intake interface {
	Enqueue(ctx context.Context, req Request, claims []string, ttl time.Duration) (ID, error)
}

// StepIntake is Intake in separate calls to the three ports.
type StepIntake struct {
	Idempotency Idempotency
	Records     interface {
		Save(ctx context.Context, r Record) error
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
