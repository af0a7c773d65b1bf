package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/reap"
)

// TestDeferredRequestWakesWhenItsLockIsReleased: the second push to a busy
// branch is deferred with a long backoff, and leaves its receipt on the
// lock; when the reaper ends the first build and releases the lock, the
// second request is visible again at once, not after the backoff.
func TestDeferredRequestWakesWhenItsLockIsReleased(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := buildtest.NewClock(t0)
	f := newFixture(0, clock)
	f.cfg.BackoffBase, f.cfg.BackoffMax = 10*time.Minute, 10*time.Minute
	d := f.dispatcher(nil)
	first, second := request("decap-ci/hello", "main", build.TriggerPush, t0), request("decap-ci/hello", "main", build.TriggerPush, t0.Add(time.Second))
	if err := f.queue.Publish(ctx, first, second); err != nil {
		t.Fatal(err)
	}
	receive := func() []build.Message {
		t.Helper()
		msgs, err := f.queue.Receive(ctx, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	msgs := receive()
	if len(msgs) == 0 {
		t.Fatal("nothing to receive")
	}
	if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Launched {
		t.Fatalf("first push: %v (%s), want launched", dec.Action, dec.Reason)
	}
	msgs = receive()
	if len(msgs) != 1 {
		t.Fatalf("received %d messages after the first launch, want the second push", len(msgs))
	}
	if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Deferred || dec.Cause != dispatch.CauseLocked {
		t.Fatalf("second push: %v %s, want deferred behind the lock", dec.Action, dec.Cause)
	}
	clock.Advance(time.Second)
	if msgs := receive(); len(msgs) != 0 {
		t.Fatalf("received %d messages while the branch is busy, want none", len(msgs))
	}

	r := reap.New(reap.Config{}, reap.Deps{Records: f.records, Locks: f.locks, Executor: f.launcher, Waker: f.queue, Now: clock.Now})
	code := 0
	if err := r.Handle(ctx, build.Outcome{BuildID: first.BuildID, Team: first.Team, Project: first.Project, Ref: first.Ref,
		Status: build.StatusSucceeded, ExitCode: &code, FinishedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	msgs = receive()
	if len(msgs) != 1 {
		t.Fatalf("received %d messages right after the lock was released, want the second push (its backoff is 10 min)", len(msgs))
	}
	if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Launched || dec.BuildID != second.BuildID {
		t.Errorf("second push after the release: %v %s, want launched", dec.Action, dec.BuildID)
	}
}

// TestDeferralWhileTheLockGoesIsRetriedAtOnce: a lock released between the
// failed Acquire and Await leaves no lease to wait on; the request is
// tried again at once rather than after its backoff.
func TestDeferralWhileTheLockGoesIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := buildtest.NewClock(t0)
	f := newFixture(0, clock)
	f.cfg.BackoffBase, f.cfg.BackoffMax = 10*time.Minute, 10*time.Minute
	holder := build.NewID(t0)
	req := request("decap-ci/hello", "main", build.TriggerPush, t0)
	if err := f.locks.Acquire(ctx, build.Lease{Key: req.LockKey(), BuildID: holder, Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(f.cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: releasingLocks{f.locks, holder},
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Now: clock.Now})
	if err := f.queue.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	msgs, err := f.queue.Receive(ctx, 1, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Deferred {
		t.Fatalf("Handle: %v, want deferred", dec.Action)
	}
	if msgs, _ := f.queue.Receive(ctx, 1, 0); len(msgs) != 1 {
		t.Errorf("received %d messages after the lock went during the deferral, want the request again at once", len(msgs))
	}
}

// releasingLocks releases the holder's lock just before Await, as a reaper
// would in that moment.
type releasingLocks struct {
	*buildtest.FakeLocks
	holder build.ID
}

func (l releasingLocks) Await(ctx context.Context, key, waiter string) error {
	if _, err := l.FakeLocks.Release(ctx, key, l.holder); err != nil {
		return err
	}
	return l.FakeLocks.Await(ctx, key, waiter)
}
