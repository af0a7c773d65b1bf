package build

import (
	"crypto/sha256"
	"fmt"
	"time"
)

// Retryable reports whether r, a final record, is a build that ended by an
// infrastructure failure (Infra) and may start another attempt: its
// attempt is at most its InfraRetries. Whether a newer request superseded
// it meanwhile is the caller's to check (Supersedable).
func (r Record) Retryable() bool {
	return r.Status == StatusErrored && r.Infra != "" && r.AttemptNumber() <= r.InfraRetries
}

// NextAttempt returns the request and the queued record of the retry of
// r, a build that ended by an infrastructure failure (Retryable): the same
// team, project, ref, ref type, SHA, trigger, requester and pull request
// (an untrusted build's retry is as untrusted), so the same
// lock key and queue group; attempt r's + 1 and RetryOf r. Its build ID is
// RetryID(r), and everything else comes from r's final record, so making
// the retry of one failed build twice (a reaper that handles its end
// again after a crash) makes the same request and record. ErrConflict when
// r may not be retried.
func (r Record) NextAttempt() (Request, Record, error) {
	if !r.Retryable() {
		return Request{}, Record{}, fmt.Errorf("%w: build %s is %s (infrastructure failure %q), attempt %d of %d retries: no retry",
			ErrConflict, r.BuildID, r.Status, r.Infra, r.AttemptNumber(), r.InfraRetries)
	}
	req := Request{
		V: MessageVersion, BuildID: RetryID(r.BuildID, r.FinishedAt), Team: r.Team, Project: r.Project,
		Ref: r.Ref, RefType: r.RefType, SHA: r.SHA, Trigger: r.Trigger, RequestedBy: r.RequestedBy,
		RequestedAt: r.FinishedAt.UTC(), PullRequest: clonePull(r.PullRequest),
	}
	if err := req.Validate(); err != nil {
		return Request{}, Record{}, fmt.Errorf("retry of build %s: %w", r.BuildID, err)
	}
	rec := RecordFor(req)
	rec.Attempt, rec.RetryOf = r.AttemptNumber()+1, r.BuildID
	return req, rec, nil
}

// RetryID returns the build ID of the retry of build failed, which ended
// at: a UUIDv7 whose time is at and whose other bits are a SHA-256 of
// failed's ID, so it sorts by when the retry was made and is the same
// every time it is made again.
func RetryID(failed ID, at time.Time) ID {
	sum := sha256.Sum256([]byte("retry:" + string(failed)))
	var b [16]byte
	copy(b[6:], sum[:10])
	return uuid7(at, b)
}
