package reap_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/reap"
)

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

type fixture struct {
	records *buildtest.FakeRecords
	locks   *buildtest.FakeLocks
	queue   *buildtest.FakeQueue
	exec    *buildtest.FakeExecutor
	reaper  *reap.Reaper
	clock   *buildtest.Clock
	// separate: the reaper writes a build's end in separate calls, as on
	// AWS, rather than in one (build.Ends, the embedded store's).
	separate bool
}

func newFixture() *fixture {
	clock := buildtest.NewClock(t0)
	f := &fixture{records: buildtest.NewRecords(), locks: buildtest.NewLocks(clock.Now), exec: buildtest.NewExecutor(clock.Now), clock: clock,
		queue: buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})}
	f.reaper = f.reaperWith(nil)
	return f
}

// separately returns a fixture whose reaper writes a build's end in
// separate calls when separate is set.
func separately(separate bool) *fixture {
	f := newFixture()
	f.separate = separate
	f.reaper = f.reaperWith(nil)
	return f
}

// reaperWith returns a Reaper of f's stores and executor, as change
// alters its configuration and collaborators.
func (f *fixture) reaperWith(change func(*reap.Config, *reap.Deps)) *reap.Reaper {
	cfg, deps := reap.Config{}, reap.Deps{Records: f.records, Locks: f.locks, Executor: f.exec, Waker: f.queue, Now: f.clock.Now}
	if !f.separate {
		deps.Ends = buildtest.NewOneWrite(f.locks, f.records, f.queue)
	}
	if change != nil {
		change(&cfg, &deps)
	}
	return reap.New(cfg, deps)
}

// running records a running build holding its lock, as the dispatcher leaves it.
func (f *fixture) running(t *testing.T, ref string) build.Record {
	t.Helper()
	ctx := context.Background()
	id := build.NewID(f.clock.Now())
	rec := build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: ref, RefType: build.Branch, Trigger: build.TriggerPush,
		Status: build.StatusRunning, QueuedAt: f.clock.Now(), StartedAt: f.clock.Now(), PodName: id.PodName()}
	if err := f.records.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec, err := f.records.Get(ctx, id) // with the number the store gave it
	if err != nil {
		t.Fatal(err)
	}
	if err := f.locks.Acquire(ctx, build.Lease{Key: rec.LockKey(), BuildID: id, Owner: "d", AcquiredAt: f.clock.Now(), ExpiresAt: f.clock.Now().Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	f.launch(t, build.Job{Request: build.Request{V: 1, BuildID: id, Team: rec.Team, Project: rec.Project, Ref: ref,
		RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: rec.QueuedAt}})
	return rec
}

// launch starts job's build on f's executor.
func (f *fixture) launch(t *testing.T, job build.Job) {
	t.Helper()
	if err := f.exec.Launch(context.Background(), job); err != nil {
		t.Fatal(err)
	}
}

func outcome(rec build.Record, status build.Status, code int, at time.Time) build.Outcome {
	return build.Outcome{BuildID: rec.BuildID, PodName: rec.PodName, Team: rec.Team, Project: rec.Project, Ref: rec.Ref,
		Status: status, ExitCode: &code, Reason: "exit code", StartedAt: rec.StartedAt, FinishedAt: at,
		LogKey: build.LogKey(rec.BuildID), ArtifactsKey: build.ArtifactsKey(rec.BuildID)}
}

func TestHandleEndsBuild(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := separately(separate)
		rec := f.running(t, "main")
		o := outcome(rec, build.StatusFailed, 3, t0.Add(42*time.Second))
		for range 2 { // the second call is a repeat report: a no-op
			if err := f.reaper.Handle(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := f.records.Get(ctx, rec.BuildID)
		want := rec
		three := 3
		want.Status, want.ExitCode, want.Reason, want.FinishedAt = build.StatusFailed, &three, "exit code", t0.Add(42*time.Second)
		want.LogKey, want.ArtifactsKey = build.LogKey(rec.BuildID), build.ArtifactsKey(rec.BuildID)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("record (-want +got):\n%s", diff)
		}
		if leases, _ := f.locks.List(ctx); len(leases) != 0 {
			t.Errorf("locks still held: %v", leases)
		}
		if ids, _ := f.exec.Present(ctx); len(ids) != 0 {
			t.Errorf("pods left: %v", ids)
		}
	})
}

func TestHandleKeepsOtherBuildsLock(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := separately(separate)
		old := f.running(t, "main")
		// Its lease expired and a newer build of the branch took the lock.
		f.clock.Advance(2 * time.Hour)
		newer := build.NewID(f.clock.Now())
		if err := f.locks.Acquire(ctx, build.Lease{Key: old.LockKey(), BuildID: newer, Owner: "d", AcquiredAt: f.clock.Now(), ExpiresAt: f.clock.Now().Add(time.Hour)}, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.reaper.Handle(ctx, outcome(old, build.StatusSucceeded, 0, f.clock.Now())); err != nil {
			t.Fatal(err)
		}
		leases, _ := f.locks.List(ctx)
		if len(leases) != 1 || leases[0].BuildID != newer {
			t.Errorf("leases = %v, want the newer build's kept", leases)
		}
	})
}

func TestHandleFailureIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	rec := f.running(t, "main")
	f.exec.FailRemove(errors.New("api server down"))
	o := outcome(rec, build.StatusSucceeded, 0, t0.Add(time.Second))
	if err := f.reaper.Handle(ctx, o); err == nil {
		t.Fatal("Handle succeeded although removal failed")
	}
	// Record and lock are already settled; the retry only removes.
	if got, _ := f.records.Get(ctx, rec.BuildID); got.Status != build.StatusSucceeded {
		t.Errorf("status = %s before removal, want succeeded", got.Status)
	}
	f.exec.FailRemove(nil)
	if err := f.reaper.Handle(ctx, o); err != nil {
		t.Fatal(err)
	}
	if ids, _ := f.exec.Present(ctx); len(ids) != 0 {
		t.Errorf("pods left: %v", ids)
	}
}

func TestHandleWithoutRecordOrLabels(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := separately(separate)
		// A build whose dispatcher died before its first record write.
		id := build.NewID(t0)
		code := 0
		o := build.Outcome{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", Status: build.StatusSucceeded, ExitCode: &code, StartedAt: t0, FinishedAt: t0.Add(time.Second)}
		if err := f.reaper.Handle(ctx, o); err != nil {
			t.Fatal(err)
		}
		if got, err := f.records.Get(ctx, id); err != nil || got.Status != build.StatusSucceeded || got.LockKey() != "decap-ci/hello/main" {
			t.Errorf("record = %+v, %v", got, err)
		}
		// An outcome without labels takes the lock key from the record.
		rec := f.running(t, "feature")
		bare := build.Outcome{BuildID: rec.BuildID, Status: build.StatusErrored, Reason: "launch interrupted"}
		if err := f.reaper.Handle(ctx, bare); err != nil {
			t.Fatal(err)
		}
		if leases, _ := f.locks.List(ctx); len(leases) != 0 {
			t.Errorf("lock of an unlabelled outcome still held: %v", leases)
		}
		if err := f.reaper.Handle(ctx, build.Outcome{BuildID: rec.BuildID, Status: build.StatusRunning}); err == nil {
			t.Errorf("a non-final outcome was accepted")
		}
	})
}

func TestReconcileEndsVanishedBuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	gone := f.running(t, "gone")
	alive := f.running(t, "alive")
	f.exec.Vanish(gone.BuildID) // deleted from outside while nobody watched
	if err := f.reaper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.records.Get(ctx, gone.BuildID); got.Status != build.StatusErrored || got.Reason == "" {
		t.Errorf("vanished build = %s (%q), want errored with a reason", got.Status, got.Reason)
	}
	if got, _ := f.records.Get(ctx, alive.BuildID); got.Status != build.StatusRunning {
		t.Errorf("live build = %s, want running", got.Status)
	}
	leases, _ := f.locks.List(ctx)
	if len(leases) != 1 || leases[0].BuildID != alive.BuildID {
		t.Errorf("leases = %v, want only the live build's", leases)
	}
}

type endNotifier struct{ ch chan build.Record }

func (n endNotifier) BuildEnded(_ context.Context, rec build.Record) error {
	n.ch <- rec
	return nil
}

func TestReaperNotifiesEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	n := endNotifier{make(chan build.Record, 2)}
	f.reaper = f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Notifier = n })
	rec := f.running(t, "main")
	o := outcome(rec, build.StatusSucceeded, 0, t0.Add(time.Second))
	for range 2 { // a repeated report notifies nothing new
		if err := f.reaper.Handle(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-n.ch:
		if got.BuildID != rec.BuildID || got.Status != build.StatusSucceeded {
			t.Errorf("notified %+v, want the succeeded record", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notice of the end")
	}
	select {
	case got := <-n.ch:
		t.Errorf("a second notice for one end: %+v", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRunOwnsItsLoops: Run reconciles at once (a build that vanished while
// no reaper ran is recorded), stops builds asked to cancel every
// CancelInterval, and returns nil when its context ends.
func TestRunOwnsItsLoops(t *testing.T) {
	t.Parallel()
	f := newFixture()
	ctx, cancel := context.WithCancel(t.Context())
	vanished, asked := f.running(t, "vanished"), f.running(t, "asked")
	f.exec.Vanish(vanished.BuildID)
	r := f.reaperWith(func(c *reap.Config, _ *reap.Deps) { c.CancelInterval = 10 * time.Millisecond })
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	if err := asked.RequestCancel(f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(ctx, asked); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := f.records.Get(ctx, vanished.BuildID)
		if got.Status == build.StatusErrored && len(f.exec.Cancelled()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: vanished build %s, stopped %v; want it errored and %s stopped", got.Status, f.exec.Cancelled(), asked.BuildID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after its context ended: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRunEndsWhenWatchFails(t *testing.T) {
	t.Parallel()
	f := newFixture()
	f.exec.FailWatch(errors.New("informer failed"))
	err := f.reaper.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "informer failed") {
		t.Errorf("Run with a failing Watch: %v, want its error", err)
	}
}

type countedRecords struct {
	*buildtest.FakeRecords
	w *buildtest.Calls
}

func (r countedRecords) Save(ctx context.Context, rec build.Record) error {
	r.w.Inc("records.save")
	return r.FakeRecords.Save(ctx, rec)
}

type countedLocks struct {
	*buildtest.FakeLocks
	w *buildtest.Calls
}

func (l countedLocks) Release(ctx context.Context, key string, id build.ID) (string, error) {
	l.w.Inc("locks.release")
	return l.FakeLocks.Release(ctx, key, id)
}

type countedWaker struct {
	*buildtest.FakeQueue
	w *buildtest.Calls
}

func (q countedWaker) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	q.w.Inc("queue.change_visibility")
	return q.FakeQueue.ChangeVisibility(ctx, receipt, d)
}

type countedEnds struct {
	*buildtest.FakeOneWrite
	w *buildtest.Calls
}

func (e countedEnds) Ended(ctx context.Context, rec build.Record, key string) (bool, error) {
	e.w.Inc("ends.ended")
	return e.FakeOneWrite.Ended(ctx, rec, key)
}

// TestEndWritesAtOnce checks that a reaper given Ends records a build's
// end, frees its lock and wakes the request waiting for the lock in one
// write, and that without it (AWS) it makes the separate calls; either
// way the record is final, the lock free and the waiting request visible.
func TestEndWritesAtOnce(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := newFixture()
		rec := f.running(t, "main")
		next := build.Request{V: 1, BuildID: build.NewID(f.clock.Now()), Team: rec.Team, Project: rec.Project, Ref: rec.Ref,
			RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: f.clock.Now()}
		if err := f.queue.Publish(ctx, next); err != nil {
			t.Fatal(err)
		}
		msgs, err := f.queue.Receive(ctx, 1, 0)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Receive() = %d messages, %v", len(msgs), err)
		}
		// Deferred behind the lock, as a dispatcher leaves it.
		if err := f.queue.ChangeVisibility(ctx, msgs[0].Receipt, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := f.locks.Await(ctx, rec.LockKey(), msgs[0].Receipt); err != nil {
			t.Fatal(err)
		}
		w := &buildtest.Calls{}
		want := map[string]int{"ends.ended": 1}
		r := f.reaperWith(func(_ *reap.Config, d *reap.Deps) {
			d.Records, d.Locks, d.Waker = countedRecords{f.records, w}, countedLocks{f.locks, w}, countedWaker{f.queue, w}
			if separate {
				d.Ends = nil
				want = map[string]int{"records.save": 1, "locks.release": 1, "queue.change_visibility": 1}
			} else {
				d.Ends = countedEnds{buildtest.NewOneWrite(f.locks, f.records, f.queue), w}
			}
		})
		if err := r.Handle(ctx, outcome(rec, build.StatusSucceeded, 0, f.clock.Now())); err != nil {
			t.Fatal(err)
		}
		if got := w.Counts(); !maps.Equal(got, want) {
			t.Errorf("writes %v, want %v", got, want)
		}
		if got, _ := f.records.Get(ctx, rec.BuildID); got.Status != build.StatusSucceeded {
			t.Errorf("record %s, want succeeded", got.Status)
		}
		if leases, _ := f.locks.List(ctx); len(leases) != 0 {
			t.Errorf("locks still held: %v", leases)
		}
		if again, _ := f.queue.Receive(ctx, 1, 0); len(again) != 1 {
			t.Errorf("the waiting request is not visible after the build's end (%d messages)", len(again))
		}
	})
}
