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

// Locks releases a build's lock and slot. Release of a lock nobody holds is
// not an error; of a lock another build holds, build.ErrConflict.
type Locks interface {
	Release(ctx context.Context, key string, id build.ID) error
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

// Reaper ends builds. Handle is idempotent and safe to call concurrently for
// different builds.
type Reaper struct {
	records Records
	locks   Locks
	exec    Executor
	log     *slog.Logger
	now     func() time.Time
	notify  Notifier
}

// NotifyTo makes r tell n about every build it ends, and returns r.
func (r *Reaper) NotifyTo(n Notifier) *Reaper {
	r.notify = n
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
	return &Reaper{records: records, locks: locks, exec: exec, log: logger, now: now}
}

// Handle ends one build: final record, then lock release, then removal. A
// step that fails returns the error and leaves the later steps undone; the
// executor reports the outcome again until the build is removed.
func (r *Reaper) Handle(ctx context.Context, o build.Outcome) error {
	if !o.Status.Final() {
		return fmt.Errorf("outcome of %s has status %q, not a final one", o.BuildID, o.Status)
	}
	rec, err := r.records.Get(ctx, o.BuildID)
	switch {
	case errors.Is(err, build.ErrNotFound):
		// Launched by a dispatcher that died before its first record write.
		rec = build.Record{BuildID: o.BuildID, Team: o.Team, Project: o.Project, Ref: o.Ref,
			RefType: build.Branch, QueuedAt: o.BuildID.Time()}
		if rec.QueuedAt.IsZero() {
			rec.QueuedAt = o.StartedAt
		}
	case err != nil:
		return fmt.Errorf("get record %s: %w", o.BuildID, err)
	}
	if o.Team == "" {
		// An executor that lost the build's labels (e.g. a launch interrupted
		// before its job was written): the record knows the lock key.
		o.Team, o.Project, o.Ref = rec.Team, rec.Project, rec.Ref
	}
	log := r.log.With("build_id", o.BuildID, "lock_key", o.LockKey())
	if !rec.Status.Final() {
		rec.Status = o.Status
		rec.ExitCode = o.ExitCode
		rec.Reason = o.Reason
		if !o.StartedAt.IsZero() {
			rec.StartedAt = o.StartedAt
		}
		rec.FinishedAt = o.FinishedAt
		if rec.FinishedAt.IsZero() {
			rec.FinishedAt = r.now()
		}
		if rec.StartedAt.IsZero() {
			rec.StartedAt = rec.FinishedAt
		}
		rec.LogKey = o.LogKey
		rec.ArtifactsKey = o.ArtifactsKey
		if o.PodName != "" {
			rec.PodName = o.PodName
		}
		rec.NextAttemptAt = time.Time{}
		if err := r.records.Save(ctx, rec); err != nil && !errors.Is(err, build.ErrConflict) {
			return fmt.Errorf("record %s: %w", o.BuildID, err)
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
	} else if err := r.locks.Release(ctx, o.LockKey(), o.BuildID); err != nil {
		if !errors.Is(err, build.ErrConflict) {
			return fmt.Errorf("release lock %s: %w", o.LockKey(), err)
		}
		// Its lease expired and another build took the key: nothing to free.
		log.Warn("lock already held by another build")
	}
	if err := r.exec.Remove(ctx, o.BuildID); err != nil {
		return fmt.Errorf("remove %s: %w", o.BuildID, err)
	}
	return nil
}

// Reconcile ends builds recorded as running whose Pod or process is gone
// without an outcome (deleted from outside while nobody watched). Records
// are read before the executor is asked, and the dispatcher creates a build's
// Pod before recording it running, so a build launched meanwhile is never
// taken for lost.
func (r *Reaper) Reconcile(ctx context.Context) error {
	running, err := r.records.Running(ctx)
	if err != nil {
		return fmt.Errorf("list running builds: %w", err)
	}
	if len(running) == 0 {
		return nil
	}
	present, err := r.exec.Present(ctx)
	if err != nil {
		return fmt.Errorf("list build pods: %w", err)
	}
	live := make(map[build.ID]bool, len(present))
	for _, id := range present {
		live[id] = true
	}
	var errs []error
	for _, rec := range running {
		if live[rec.BuildID] {
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
