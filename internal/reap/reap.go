// Package reap ends builds: when an executor reports that a build Pod (or
// local process) ended, the reaper writes the final record, releases the
// branch lock and its slot, starts the next attempt of a build that an
// infrastructure failure ended, and removes the Pod, in that order, so a
// crash at any point is repaired by handling the same outcome again.
package reap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/supersede"
)

// Records stores build records; Save fails with build.ErrConflict when the
// stored record is already final.
// Unfinished lists a lock key's queued, deferred and running records,
// oldest first: a retry is not made when a newer request waits.
type Records interface {
	Get(ctx context.Context, id build.ID) (build.Record, error)
	Save(ctx context.Context, r build.Record) error
	Running(ctx context.Context) ([]build.Record, error)
	Unfinished(ctx context.Context, key string) ([]build.Record, error)
}

// Publisher puts build requests on the queue (group = lock key,
// deduplication ID = build ID): the retries the reaper starts. An error
// means the request may not be assumed queued.
type Publisher interface {
	Publish(ctx context.Context, reqs ...build.Request) error
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

// Executor is the executor of builds (local processes, build Pods) as the
// reaper uses it. Watch calls handle with the Outcome of every build that
// ended, as it ends (an event: a Pod's update, a local process's end that
// its launcher reports, not only a periodic scan), and again, soon after a
// failed handle, until the build is removed; until ctx is done, then it
// returns. Cancel stops a build (build.ErrNotFound: nothing to stop).
// Remove deletes what is left of an ended build whose end is recorded (its
// Pod, its run directory); removing something already gone is not an
// error. Present lists the builds that have a Pod or process, ended or not.
type Executor interface {
	Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error
	Cancel(ctx context.Context, id build.ID) error
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
	// Retried hears of each retry the reaper started, with the
	// infrastructure failure that ended the attempt before it.
	Retried(cause build.InfraCause)
}

// Step names what the reaper was doing when it failed.
type Step string

// Steps.
const (
	StepRecord    Step = "record"    // reading or writing the build record
	StepRelease   Step = "release"   // releasing the lock and slot
	StepRemove    Step = "remove"    // removing the Pod or process
	StepReconcile Step = "reconcile" // listing running builds or build Pods, renewing leases
	StepCancel    Step = "cancel"    // stopping a build someone asked to cancel
	StepRetry     Step = "retry"     // recording or publishing the retry of a build
)

// Config tunes a Reaper. Zero values take the defaults named.
type Config struct {
	// ReconcileInterval is how often Run reconciles the builds recorded as
	// running with the executor's (default 1m).
	ReconcileInterval time.Duration
	// RenewFor is how long past each Reconcile the lease of a live build
	// lasts at least (default DefaultRenewFor); it must be well past
	// ReconcileInterval, so that a few failed reconciliations lose no lease.
	RenewFor time.Duration
	// CancelInterval is how often Run looks for running builds someone
	// asked to cancel (SweepCancels): the longest a cancel waits before the
	// build is told to stop (default 1s).
	CancelInterval time.Duration
	// CancelRepeat is how long after stopping a build SweepCancels stops it
	// again if it still runs: a lost delete, a process that ignored the
	// signal (default 30s).
	CancelRepeat time.Duration
}

// DefaultRenewFor is how long past each Reconcile the lease of a live build
// lasts at least by default: many reconciliations, so a lease never runs
// out between two of them.
const DefaultRenewFor = 15 * time.Minute

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReconcileInterval, time.Minute)
	def(&c.RenewFor, DefaultRenewFor)
	def(&c.CancelInterval, time.Second)
	def(&c.CancelRepeat, 30*time.Second)
	return c
}

// Deps are the Reaper's collaborators.
type Deps struct {
	Records  Records
	Locks    Locks
	Executor Executor
	// Waker, when set, wakes the request deferred behind a lock the reaper
	// releases, at once rather than after its backoff.
	Waker Waker
	// Ends, when set, writes a build's final record, its lock's release
	// and the waiting request's wake-up in one write (the embedded
	// store's); nil: separate calls to Records, Locks and Waker.
	Ends build.Ends
	// Notifier, when set, hears of every build the reaper ends.
	Notifier Notifier
	// Publisher puts the retries of builds that infrastructure failures
	// ended on the queue; nil starts none.
	Publisher Publisher
	// Observer hears what the reaper does; nil hears nothing.
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
}

type nopObserver struct{}

func (nopObserver) Ended(build.Status, time.Duration, time.Duration) {}
func (nopObserver) Failed(Step)                                      {}
func (nopObserver) Retried(build.InfraCause)                         {}

// Reaper ends builds. Handle is idempotent and safe to call concurrently for
// different builds.
type Reaper struct {
	cfg     Config
	records Records
	locks   Locks
	exec    Executor
	log     *slog.Logger
	now     func() time.Time
	notify  Notifier
	waker   Waker
	ends    build.Ends
	publish Publisher
	obs     Observer

	// cancelAsked is when SweepCancels last stopped each build, so a
	// terminating Pod is not deleted (and logged) again every sweep.
	cancelMu    sync.Mutex
	cancelAsked map[build.ID]time.Time
}

// New returns a Reaper.
func New(cfg Config, d Deps) *Reaper {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	return &Reaper{
		cfg: cfg.withDefaults(), records: d.Records, locks: d.Locks, exec: d.Executor,
		log: d.Logger, now: d.Now, notify: d.Notifier, waker: d.Waker, ends: d.Ends, publish: d.Publisher, obs: d.Observer,
	}
}

// Run ends builds until ctx is done, then returns nil once its loops
// stopped: it follows the executor's Watch into Handle, reconciles every
// ReconcileInterval (at once first, so builds that ended while no reaper
// ran are recorded), and stops the builds someone asked to cancel every
// CancelInterval. The errors of Reconcile and SweepCancels are logged and
// the work tried again on the next round; an error ending Watch ends Run.
func (r *Reaper) Run(ctx context.Context) error {
	loops, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { r.every(loops, r.cfg.ReconcileInterval, "reconcile running builds", r.Reconcile) })
	wg.Go(func() { r.every(loops, r.cfg.CancelInterval, "stop builds asked to cancel", r.SweepCancels) })
	err := r.exec.Watch(loops, r.Handle)
	stop()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("the executor stopped watching")
	}
	return fmt.Errorf("watch builds: %w", err)
}

// every runs work at once and then every interval until ctx is done,
// logging its errors.
func (r *Reaper) every(ctx context.Context, interval time.Duration, what string, work func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := work(ctx); err != nil && ctx.Err() == nil {
			r.log.Error(what, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Handle ends one build: final record, then lock release, then the retry
// of a build that an infrastructure failure ended, then removal. A step
// that fails returns the error and leaves the later steps undone; the
// executor reports the outcome again until the build is removed, and each
// step is idempotent (see retry).
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
	// settled: the end's one write (Ends) recorded it and, when released,
	// freed the lock and woke its waiter.
	var settled, released bool
	if !rec.Status.Final() {
		// End records a build stopped on request (SweepCancels) as
		// cancelled, whatever the executor saw of the stop, and keeps only
		// the build's own object keys.
		if err := rec.End(o, r.now()); err != nil {
			return StepRecord, fmt.Errorf("record %s: %w", o.BuildID, err)
		}
		var err error
		if r.ends != nil && o.Team != "" {
			// The record, the release and the wake-up in one write; on
			// any error, nothing was written and the separate calls
			// below find out what to do.
			if released, err = r.ends.Ended(ctx, rec, o.LockKey()); err == nil {
				settled = true
			}
		}
		if !settled && !errors.Is(err, build.ErrConflict) {
			err = r.records.Save(ctx, rec)
		}
		switch {
		case errors.Is(err, build.ErrConflict):
			// Another reaper (or a cancel) wrote the final record first:
			// the stored end is the build's, and the retry follows from
			// it alone (another finish time would make another retry; a
			// cancel makes none).
			if rec, err = r.records.Get(ctx, o.BuildID); err != nil {
				return StepRecord, fmt.Errorf("get record %s: %w", o.BuildID, err)
			}
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
	switch {
	case settled && !released:
		log.Warn("lock already held by another build")
	case settled:
	case o.Team == "":
		log.Warn("build has neither labels nor a record; its lock, if any, is freed when its lease expires")
	default:
		if step, err := r.release(ctx, log, o); err != nil {
			return step, err
		}
	}
	if err := r.retry(ctx, log, rec); err != nil {
		return StepRetry, err
	}
	if err := r.exec.Remove(ctx, o.BuildID); err != nil {
		return StepRemove, fmt.Errorf("remove %s: %w", o.BuildID, err)
	}
	return "", nil
}

// release frees the lock of o's build and wakes the request waiting for
// it.
func (r *Reaper) release(ctx context.Context, log *slog.Logger, o build.Outcome) (Step, error) {
	if waiter, err := r.locks.Release(ctx, o.LockKey(), o.BuildID); err != nil {
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
	return "", nil
}

// retry starts the next attempt of rec, a final record, when an
// infrastructure failure ended it and it has retries left
// (build.Record.Retryable): it records the retry, queued, then publishes
// it. A request superseded meanwhile is not retried: when a newer request
// of its lock key waits or runs, and the project lets newer requests
// supersede it (Record.Supersedable), there is nothing to retry.
//
// It is safe to run again after a crash at any point, or for an outcome
// reported twice: the retry's build ID and record follow from rec alone
// (build.Record.NextAttempt), so one failed build has one retry at most.
// A retry found recorded and still waiting is published again (the crash
// came before its publish, or after: the queue's deduplication and the
// dispatcher's once-only check drop a second message); one found started
// or ended is left alone.
func (r *Reaper) retry(ctx context.Context, log *slog.Logger, rec build.Record) error {
	if r.publish == nil || !rec.Retryable() {
		return nil
	}
	req, next, err := rec.NextAttempt()
	if err != nil {
		return err
	}
	created := false
	switch cur, err := r.records.Get(ctx, next.BuildID); {
	case err == nil && !cur.Waiting():
		return nil // published before: it ran, or ended
	case err == nil:
		// Recorded before, maybe not published: publish (again).
	case errors.Is(err, build.ErrNotFound):
		if rec.Supersedable {
			newer, err := supersede.HasNewer(ctx, r.records, rec)
			if err != nil {
				return fmt.Errorf("retry %s: %w", rec.BuildID, err)
			}
			if newer != "" {
				log.Info("build not retried: a newer request of its lock key supersedes it", "cause", rec.Infra, "newer", newer)
				return nil
			}
		}
		switch err := r.records.Save(ctx, next); {
		case err == nil:
			created = true
			r.obs.Retried(rec.Infra)
		case errors.Is(err, build.ErrConflict):
			return nil // another reaper made it, and it has moved on
		default:
			return fmt.Errorf("record the retry of %s: %w", rec.BuildID, err)
		}
	default:
		return fmt.Errorf("retry %s: %w", rec.BuildID, err)
	}
	if err := r.publish.Publish(ctx, req); err != nil {
		return fmt.Errorf("publish the retry of %s: %w", rec.BuildID, err)
	}
	if created {
		log.Info("build retried", "cause", rec.Infra, "retry", next.BuildID, "attempt", next.Attempt, "retries", rec.InfraRetries)
	}
	return nil
}

// Reconcile ends builds recorded as running whose Pod or process is gone
// without an outcome (deleted from outside while nobody watched), renews
// the leases of those still there, and stops builds that run although
// their record ended before they started. Records are read before the
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
//
// A request cancelled while a dispatcher launched it may run under a
// final record that never saw it start: the cancel read the request as
// waiting, the dispatcher recorded it running, and the cancel's write
// replaced that. (A supersede cannot: Records.EndWaiting refuses a request
// a dispatcher claimed.) Neither the dispatcher nor the cancel sweep sees
// it, so Reconcile stops it; its end then finds the record final and only
// frees its lock and removes it.
func (r *Reaper) Reconcile(ctx context.Context) error {
	running, err := r.records.Running(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.obs.Failed(StepReconcile)
		}
		return fmt.Errorf("list running builds: %w", err)
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
	recorded := make(map[build.ID]bool, len(running))
	for _, rec := range running {
		recorded[rec.BuildID] = true
		if live[rec.BuildID] {
			if err := r.renew(ctx, rec); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		// Gone without an end while nobody watched: deleted from outside
		// (or with its node), an infrastructure failure.
		o := build.Outcome{BuildID: rec.BuildID, PodName: rec.PodName, Team: rec.Team, Project: rec.Project, Ref: rec.Ref,
			Status: build.StatusErrored, Reason: "build pod disappeared before it reported an end", StartedAt: rec.StartedAt, FinishedAt: r.now(),
			Infra: build.InfraDeleted}
		if err := r.Handle(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range present {
		if recorded[id] {
			continue
		}
		if err := r.stopStray(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopStray stops the present build id, not recorded as running, if its
// record ended without it ever starting (see Reconcile). Other present
// builds are left alone: ended ones await Handle, waiting ones are being
// launched.
func (r *Reaper) stopStray(ctx context.Context, id build.ID) error {
	rec, err := r.records.Get(ctx, id)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return nil
	case err != nil:
		if ctx.Err() == nil {
			r.obs.Failed(StepReconcile)
		}
		return fmt.Errorf("get record %s: %w", id, err)
	case !rec.Status.Final() || !rec.StartedAt.IsZero():
		return nil
	}
	switch err := r.exec.Cancel(ctx, id); {
	case err == nil:
		r.log.Warn("build runs although its record ended before it started; stopping it",
			"build_id", id, "lock_key", rec.LockKey(), "status", rec.Status)
	case errors.Is(err, build.ErrNotFound):
	default:
		if ctx.Err() == nil {
			r.obs.Failed(StepCancel)
		}
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// renew makes the lease of rec, a live build, last at least RenewFor from
// now. A lease that is gone is no error to retry: the build ended (and
// released it) since its record was read, or it runs without its lock,
// which is logged here.
func (r *Reaper) renew(ctx context.Context, rec build.Record) error {
	if rec.Team == "" {
		return nil
	}
	log := r.log.With("build_id", rec.BuildID, "lock_key", rec.LockKey())
	err := r.locks.Extend(ctx, rec.LockKey(), rec.BuildID, r.now().Add(r.cfg.RenewFor))
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

// SweepCancels stops every running build whose record asks for a cancel
// (Record.CancelRequestedAt: ingest records a cancel there, whatever the
// executor, and never stops a build itself). The build's end is then
// recorded as cancelled by Handle. A build whose stop did not end it is
// stopped again after CancelRepeat; one already gone is left to Watch and
// Reconcile.
func (r *Reaper) SweepCancels(ctx context.Context) error {
	running, err := r.records.Running(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.obs.Failed(StepCancel)
		}
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
		if at, ok := asked[rec.BuildID]; ok && r.now().Sub(at) < r.cfg.CancelRepeat {
			r.cancelAsked[rec.BuildID] = at // stopping: its end comes
			continue
		}
		err := r.exec.Cancel(ctx, rec.BuildID)
		switch {
		case err == nil:
			r.cancelAsked[rec.BuildID] = r.now()
			r.log.Info("build cancelling", "build_id", rec.BuildID, "lock_key", rec.LockKey(), "requested_at", rec.CancelRequestedAt)
		case errors.Is(err, build.ErrNotFound):
		default:
			if ctx.Err() == nil {
				r.obs.Failed(StepCancel)
			}
			errs = append(errs, fmt.Errorf("cancel %s: %w", rec.BuildID, err))
		}
	}
	return errors.Join(errs...)
}
