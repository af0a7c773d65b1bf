// Package reap ends builds: when an executor reports that a build Pod (or
// local process) ended, the reaper writes the final record, releases the
// branch lock and its slot, and removes the Pod, in that order, so a crash at
// any point is repaired by handling the same outcome again.
package reap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Records stores build records; Save fails with build.ErrConflict when the
// stored record is already final.
type Records interface {
	Get(ctx context.Context, id build.ID) (build.Record, error)
	Save(ctx context.Context, r build.Record) error
	Running(ctx context.Context) ([]build.Record, error)
}

// Locks releases a build's lock and slot, and renews the lease of a live
// build. Release of a lock nobody holds is not an error; of a lock another
// build holds, build.ErrConflict. Extend moves the lease's expiry to until
// only if that is later (it never shortens one); build.ErrNotFound when id
// holds no unexpired lease on key.
type Locks interface {
	Release(ctx context.Context, key string, id build.ID) (waiter string, err error)
	Extend(ctx context.Context, key string, id build.ID, until time.Time) error
}

// Waker makes a deferred queue message visible again: the request that
// waited for a released lock (its receipt is the lock's waiter).
// build.ErrNotFound for a stale receipt (the message came back already).
type Waker interface {
	ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error
}

// Executor removes what is left of an ended build (its Pod, its local run
// directory), and lists what is still there; removing something already gone
// is not an error.
type Executor interface {
	Remove(ctx context.Context, id build.ID) error
	Present(ctx context.Context) ([]build.ID, error)
}

// Notifier hears of every build the reaper ends (GitHub commit statuses).
// It is called in the background; its errors are logged.
type Notifier interface {
	BuildEnded(ctx context.Context, rec build.Record) error
}

// Observer hears what the reaper does, for metrics. Its methods must be
// cheap, must not block, and must be safe for concurrent use.
type Observer interface {
	// Ended hears of each build whose final record this reaper wrote: its
	// status, how long it ran, and the lag from its end (as the executor
	// saw it) to the record; lag is negative when the executor did not
	// know when the build ended.
	Ended(status build.Status, ran, lag time.Duration)
	// Failed hears of a step that failed and will be tried again.
	Failed(step Step)
}

// Step names what the reaper was doing when it failed.
type Step string

// Steps.
const (
	StepRecord    Step = "record"    // reading or writing the build record
	StepRelease   Step = "release"   // releasing the lock and slot
	StepRemove    Step = "remove"    // removing the Pod or process
	StepReconcile Step = "reconcile" // listing running builds or build Pods, renewing leases
)

// DefaultRenewFor is how long past each Reconcile the lease of a live build
// lasts at least: well past the interval between reconciliations (a
// minute in cmd/reaper), so a lease never runs out between two of them.
const DefaultRenewFor = 15 * time.Minute

type nopObserver struct{}

func (nopObserver) Ended(build.Status, time.Duration, time.Duration) {}
func (nopObserver) Failed(Step)                                      {}

// Reaper ends builds. Handle is idempotent and safe to call concurrently for
// different builds.
type Reaper struct {
	records Records
	locks   Locks
	exec    Executor
	log     *slog.Logger
	now     func() time.Time
	notify  Notifier
	waker   Waker
	obs     Observer
	// renewFor is how long past a Reconcile a live build's lease lasts.
	renewFor time.Duration

	// cancelAsked is when SweepCancels last stopped each build, so a
	// terminating Pod is not deleted (and logged) again every sweep.
	cancelMu    sync.Mutex
	cancelAsked map[build.ID]time.Time
}

// cancelRepeat is how long SweepCancels waits before it stops a build
// again whose earlier stop did not end it (a lost delete).
const cancelRepeat = 30 * time.Second

// WakeWith makes r, when it releases a lock that a deferred request waits
// for, make that request visible at once through w; it returns r.
func (r *Reaper) WakeWith(w Waker) *Reaper {
	r.waker = w
	return r
}

// NotifyTo makes r tell n about every build it ends, and returns r.
func (r *Reaper) NotifyTo(n Notifier) *Reaper {
	r.notify = n
	return r
}

// ObserveWith makes r report to o what it does, and returns r. Call it
// before the first Handle; nil observes nothing.
func (r *Reaper) ObserveWith(o Observer) *Reaper {
	if o == nil {
		o = nopObserver{}
	}
	r.obs = o
	return r
}

// RenewFor makes Reconcile renew the lease of every live build so that it
// lasts at least d from then (d <= 0: DefaultRenewFor), and returns r. d
// must be well past the interval between Reconcile calls. Call it before
// the first Reconcile.
func (r *Reaper) RenewFor(d time.Duration) *Reaper {
	if d <= 0 {
		d = DefaultRenewFor
	}
	r.renewFor = d
	return r
}

// New returns a Reaper.
func New(records Records, locks Locks, exec Executor, logger *slog.Logger, now func() time.Time) *Reaper {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Reaper{records: records, locks: locks, exec: exec, log: logger, now: now, obs: nopObserver{}, renewFor: DefaultRenewFor}
}

// Handle ends one build: final record, then lock release, then removal. A
// step that fails returns the error and leaves the later steps undone; the
// executor reports the outcome again until the build is removed.
func (r *Reaper) Handle(ctx context.Context, o build.Outcome) error {
	if !o.Status.Final() {
		return fmt.Errorf("outcome of %s has status %q, not a final one", o.BuildID, o.Status)
	}
	step, err := r.handle(ctx, o)
	if err != nil && ctx.Err() == nil { // a shutdown is no failure
		r.obs.Failed(step)
	}
	return err
}

// handle is Handle; on failure it says at which step.
func (r *Reaper) handle(ctx context.Context, o build.Outcome) (Step, error) {
	rec, err := r.records.Get(ctx, o.BuildID)
	switch {
	case errors.Is(err, build.ErrNotFound):
		// Launched by a dispatcher that died before its first record write.
		rec = build.RecordForOutcome(o)
	case err != nil:
		return StepRecord, fmt.Errorf("get record %s: %w", o.BuildID, err)
	}
	if o.Team == "" {
		// An executor that lost the build's labels (e.g. a launch interrupted
		// before its job was written): the record knows the lock key.
		o.Team, o.Project, o.Ref = rec.Team, rec.Project, rec.Ref
	}
	log := r.log.With("build_id", o.BuildID, "lock_key", o.LockKey())
	if rec.DeliveryID != "" {
		log = log.With("delivery_id", rec.DeliveryID)
	}
	if !rec.Status.Final() {
		// End records a build stopped on request (SweepCancels) as
		// cancelled, whatever the executor saw of the stop, and keeps only
		// the build's own object keys.
		if err := rec.End(o, r.now()); err != nil {
			return StepRecord, fmt.Errorf("record %s: %w", o.BuildID, err)
		}
		switch err := r.records.Save(ctx, rec); {
		case errors.Is(err, build.ErrConflict):
			// Another reaper (or a cancel) wrote the final record first.
		case err != nil:
			return StepRecord, fmt.Errorf("record %s: %w", o.BuildID, err)
		default:
			lag := time.Duration(-1)
			if !o.FinishedAt.IsZero() {
				lag = max(r.now().Sub(o.FinishedAt), 0)
			}
			r.obs.Ended(rec.Status, rec.Duration(), lag)
		}
		log.Info("build ended", "status", rec.Status, "reason", rec.Reason, "duration", rec.Duration())
		if r.notify != nil {
			go func(rec build.Record) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := r.notify.BuildEnded(ctx, rec); err != nil {
					log.Warn("notify about the build's end", "err", err)
				}
			}(rec)
		}
	}
	if o.Team == "" {
		log.Warn("build has neither labels nor a record; its lock, if any, is freed when its lease expires")
	} else if waiter, err := r.locks.Release(ctx, o.LockKey(), o.BuildID); err != nil {
		if !errors.Is(err, build.ErrConflict) {
			return StepRelease, fmt.Errorf("release lock %s: %w", o.LockKey(), err)
		}
		// Its lease expired and another build took the key: nothing to free.
		log.Warn("lock already held by another build")
	} else if waiter != "" && r.waker != nil {
		// The branch's next request waits behind this lock: bring it back
		// now rather than after its backoff. If this fails, it comes back
		// after its backoff anyway.
		if err := r.waker.ChangeVisibility(ctx, waiter, 0); err != nil && !errors.Is(err, build.ErrNotFound) {
			log.Warn("wake the request waiting for the lock", "err", err)
		}
	}
	if err := r.exec.Remove(ctx, o.BuildID); err != nil {
		return StepRemove, fmt.Errorf("remove %s: %w", o.BuildID, err)
	}
	return "", nil
}

// Reconcile ends builds recorded as running whose Pod or process is gone
// without an outcome (deleted from outside while nobody watched), and
// renews the leases of those still there. Records are read before the
// executor is asked, and the dispatcher creates a build's Pod before
// recording it running, so a build launched meanwhile is never taken for
// lost.
//
// The dispatcher leases a running build's lock for its timeout plus a
// grace, but a build may outlast that (uploads after its deadline), and a
// lease may end early when something went wrong. So every live build's
// lease is renewed to last at least RenewFor from now; Extend never
// shortens a lease, so this only lengthens leases about to run out, and a
// lease that already ran out stays gone (logged as an error).
func (r *Reaper) Reconcile(ctx context.Context) error {
	running, err := r.records.Running(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.obs.Failed(StepReconcile)
		}
		return fmt.Errorf("list running builds: %w", err)
	}
	if len(running) == 0 {
		return nil
	}
	present, err := r.exec.Present(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.obs.Failed(StepReconcile)
		}
		return fmt.Errorf("list build pods: %w", err)
	}
	live := make(map[build.ID]bool, len(present))
	for _, id := range present {
		live[id] = true
	}
	var errs []error
	for _, rec := range running {
		if live[rec.BuildID] {
			if err := r.renew(ctx, rec); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		o := build.Outcome{BuildID: rec.BuildID, PodName: rec.PodName, Team: rec.Team, Project: rec.Project, Ref: rec.Ref,
			Status: build.StatusErrored, Reason: "build pod disappeared before it reported an end", StartedAt: rec.StartedAt, FinishedAt: r.now()}
		if err := r.Handle(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// renew makes the lease of rec, a live build, last at least renewFor from
// now. A lease that is gone is no error to retry: the build ended (and
// released it) since its record was read, or it runs without its lock,
// which is logged here.
func (r *Reaper) renew(ctx context.Context, rec build.Record) error {
	if rec.Team == "" {
		return nil
	}
	log := r.log.With("build_id", rec.BuildID, "lock_key", rec.LockKey())
	err := r.locks.Extend(ctx, rec.LockKey(), rec.BuildID, r.now().Add(r.renewFor))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, build.ErrNotFound):
		if cur, gerr := r.records.Get(ctx, rec.BuildID); gerr == nil && cur.Status.Final() {
			return nil
		}
		log.Error("live build holds no lock: it runs outside the lock and the cap", "err", err)
		return nil
	}
	if ctx.Err() == nil {
		r.obs.Failed(StepReconcile)
	}
	return fmt.Errorf("renew lock %s: %w", rec.LockKey(), err)
}

// Canceller stops a running build (deletes its Pod); build.ErrNotFound
// when there is nothing to stop.
type Canceller interface {
	Cancel(ctx context.Context, id build.ID) error
}

// SweepCancels stops every running build whose record asks for a cancel
// (Record.CancelRequestedAt, set by a service that may not stop builds
// itself). The build's end is then recorded as cancelled by Handle. A
// build already gone is left to Watch and Reconcile.
func (r *Reaper) SweepCancels(ctx context.Context, c Canceller) error {
	running, err := r.records.Running(ctx)
	if err != nil {
		return fmt.Errorf("list running builds: %w", err)
	}
	r.cancelMu.Lock()
	defer r.cancelMu.Unlock()
	asked := r.cancelAsked
	r.cancelAsked = map[build.ID]time.Time{} // forgets builds no longer running
	var errs []error
	for _, rec := range running {
		if rec.CancelRequestedAt.IsZero() {
			continue
		}
		if at, ok := asked[rec.BuildID]; ok && r.now().Sub(at) < cancelRepeat {
			r.cancelAsked[rec.BuildID] = at // stopping: its end comes
			continue
		}
		err := c.Cancel(ctx, rec.BuildID)
		switch {
		case err == nil:
			r.cancelAsked[rec.BuildID] = r.now()
			r.log.Info("build cancelling", "build_id", rec.BuildID, "lock_key", rec.LockKey(), "requested_at", rec.CancelRequestedAt)
		case errors.Is(err, build.ErrNotFound):
		default:
			errs = append(errs, fmt.Errorf("cancel %s: %w", rec.BuildID, err))
		}
	}
	return errors.Join(errs...)
}
