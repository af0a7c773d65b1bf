// Package supersede ends the requests of a lock key that a newer request of
// the key made unnecessary (project.json "supersede"): the older queued
// and deferred ones end superseded, and, when the project asks for it, the
// running build is stopped and ends superseded too. Ingest calls it for
// every request it accepts (push, API; a rebuild supersedes nothing), the
// dispatcher for the requests of other producers, which nobody recorded
// before it received them. The reaper's retries supersede nothing.
//
// It never races a launch: a waiting request is ended only through
// Records.EndWaiting, a compare-and-swap that refuses a request a
// dispatcher began to launch (Record.Launching), and a dispatcher's
// launch claim is refused once the request ended. A request being
// launched is left to the dispatcher, which looks for a newer request
// right after the build started (Started).
package supersede

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Records reads a lock key's unfinished records (Unfinished, oldest first)
// and one record (Get); EndWaiting ends a waiting record unless a
// dispatcher began to launch it (build.ErrConflict); Save writes a running
// build's stop request (build.ErrConflict once it ended).
type Records interface {
	Get(ctx context.Context, id build.ID) (build.Record, error)
	Save(ctx context.Context, r build.Record) error
	Unfinished(ctx context.Context, key string) ([]build.Record, error)
	EndWaiting(ctx context.Context, r build.Record) error
}

// Result is what Older did.
type Result struct {
	// Superseded are the waiting requests it ended superseded.
	Superseded []build.ID
	// Stopping are the running builds it asked to stop (they end
	// superseded once the reaper stopped them).
	Stopping []build.ID
}

// Older supersedes, for accepted, a request just accepted (its record
// written), the requests of its lock key older than the newest one, as p
// says: with p.Queued the waiting ones that no dispatcher began to launch
// end superseded by the newest, with p.Running the running build is asked
// to stop (build.Record.RequestSupersede).
//
// The newest is the newest waiting request (build.Record.Older), which is
// accepted itself unless Older finds a newer one: two requests accepted at
// once each write their record before they look, so at least one of them
// sees the other, and whichever sees the newer one ends the older, be it
// itself. A running build is older than every waiting request whatever
// their times say: the queue hands out a lock key's requests in the order
// they were published, so it was published before them all (the times of
// other producers' requests are their own, and clocks differ). An error
// stops nothing done so far; what Older did before it is in the Result.
func Older(ctx context.Context, recs Records, accepted build.Record, p build.SupersedePolicy, now time.Time) (Result, error) {
	var res Result
	if !p.Any() || !supersedes(accepted) {
		return res, nil
	}
	list, err := recs.Unfinished(ctx, accepted.LockKey())
	if err != nil {
		return res, fmt.Errorf("supersede the older requests of %s: %w", accepted.LockKey(), err)
	}
	if !slices.ContainsFunc(list, func(r build.Record) bool { return r.BuildID == accepted.BuildID }) {
		// The store's index may not show it yet (DynamoDB's lags).
		list = append(list, accepted)
	}
	newest, _ := build.WaitingSuperseded(list, accepted)
	var errs []error
	for _, r := range list {
		if r.BuildID == newest.BuildID || r.Waiting() && !r.Older(newest) {
			continue
		}
		switch {
		case r.Waiting() && r.LaunchingAt.IsZero():
			if !p.Queued {
				continue
			}
			ended, err := endWaiting(ctx, recs, r, newest.BuildID, now)
			switch {
			case err != nil:
				errs = append(errs, err)
			case ended:
				res.Superseded = append(res.Superseded, r.BuildID)
			case p.Running:
				// It started meanwhile: stop it if it runs.
				cur, err := recs.Get(ctx, r.BuildID)
				if err != nil {
					if !errors.Is(err, build.ErrNotFound) {
						errs = append(errs, fmt.Errorf("read %s: %w", r.BuildID, err))
					}
					continue
				}
				if cur.Status == build.StatusRunning {
					if stopping, err := stop(ctx, recs, cur, newest.BuildID, now); err != nil {
						errs = append(errs, err)
					} else if stopping {
						res.Stopping = append(res.Stopping, r.BuildID)
					}
				}
			}
		case r.Status == build.StatusRunning && p.Running:
			if stopping, err := stop(ctx, recs, r, newest.BuildID, now); err != nil {
				errs = append(errs, err)
			} else if stopping {
				res.Stopping = append(res.Stopping, r.BuildID)
			}
		}
		// A request being launched (LaunchingAt set, not running yet) is
		// the dispatcher's: it calls Started once the build runs.
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("supersede the older requests of %s: %w", accepted.LockKey(), err)
	}
	return res, nil
}

// Started asks started, a build a dispatcher has just recorded running, to
// stop when p.Running and a newer request of its lock key was accepted
// while it launched: ingest found that request being launched and left
// it to the dispatcher (see Older). It returns the newer request's build
// ID, or "" when the build goes on.
func Started(ctx context.Context, recs Records, started build.Record, p build.SupersedePolicy, now time.Time) (build.ID, error) {
	if !p.Running {
		return "", nil
	}
	list, err := recs.Unfinished(ctx, started.LockKey())
	if err != nil {
		return "", fmt.Errorf("look for requests newer than %s: %w", started.BuildID, err)
	}
	// Unfinished is oldest first: the newest request supersedes.
	for i := len(list) - 1; i >= 0; i-- {
		n := list[i]
		if n.BuildID == started.BuildID || !supersedes(n) || !started.Older(n) {
			continue
		}
		stopping, err := stop(ctx, recs, started, n.BuildID, now)
		if err != nil || !stopping {
			return "", err
		}
		return n.BuildID, nil
	}
	return "", nil
}

// Lister lists a lock key's unfinished records, oldest first.
type Lister interface {
	Unfinished(ctx context.Context, key string) ([]build.Record, error)
}

// HasNewer returns the newest request of rec's lock key newer than rec
// that waits or runs, or "": one that supersedes rec's retry (a retry is
// not made for a request superseded meanwhile).
func HasNewer(ctx context.Context, recs Lister, rec build.Record) (build.ID, error) {
	list, err := recs.Unfinished(ctx, rec.LockKey())
	if err != nil {
		return "", fmt.Errorf("look for requests newer than %s: %w", rec.BuildID, err)
	}
	for i := len(list) - 1; i >= 0; i-- {
		if n := list[i]; n.BuildID != rec.BuildID && supersedes(n) && rec.Older(n) {
			return n.BuildID, nil
		}
	}
	return "", nil
}

// supersedes reports whether r, a newer request of a lock key, supersedes
// the older ones. A rebuild does not: it repeats a past build on purpose,
// often of an older commit, and must not end the newer pushes of its
// branch that wait or run. Nor does a retry: it repeats the commit of a
// failed build, and its queue time is the failure's, later than that of a
// push accepted while the build failed that the reaper did not see yet
// (HasNewer). Both are superseded by a later request themselves, as any
// request is.
func supersedes(r build.Record) bool { return r.SupersedesOlder() }

// endWaiting ends r, a waiting request, superseded by by; ended is false
// when EndWaiting refused because r started or ended meanwhile.
func endWaiting(ctx context.Context, recs Records, r build.Record, by build.ID, now time.Time) (ended bool, err error) {
	if err := r.Supersede(now, by); err != nil {
		return false, err
	}
	switch err := recs.EndWaiting(ctx, r); {
	case err == nil:
		return true, nil
	case errors.Is(err, build.ErrConflict), errors.Is(err, build.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("end %s: %w", r.BuildID, err)
	}
}

// stop asks the running build r to stop for the newer request by;
// stopping is false when it had a stop request already (a cancel, or an
// earlier supersede) or ended meanwhile.
func stop(ctx context.Context, recs Records, r build.Record, by build.ID, now time.Time) (stopping bool, err error) {
	if !r.CancelRequestedAt.IsZero() {
		return false, nil
	}
	if err := r.RequestSupersede(now, by); err != nil {
		return false, err
	}
	switch err := recs.Save(ctx, r); {
	case err == nil:
		return true, nil
	case errors.Is(err, build.ErrConflict):
		return false, nil
	default:
		return false, fmt.Errorf("stop %s: %w", r.BuildID, err)
	}
}
