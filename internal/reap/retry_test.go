package reap_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/reap"
)

// retries records what the reaper's Observer hears of retries.
type retries struct {
	mu     sync.Mutex
	causes []build.InfraCause
}

func (o *retries) Ended(build.Status, time.Duration, time.Duration) {}
func (o *retries) Failed(reap.Step)                                 {}
func (o *retries) Retried(c build.InfraCause) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.causes = append(o.causes, c)
}

// flakyQueue fails its first fails publishes.
type flakyQueue struct {
	*buildtest.FakeQueue
	mu    sync.Mutex
	fails int
	calls int
}

func (q *flakyQueue) Publish(ctx context.Context, reqs ...build.Request) error {
	q.mu.Lock()
	q.calls++
	fail := q.fails > 0
	q.fails--
	q.mu.Unlock()
	if fail {
		return errors.New("queue unreachable")
	}
	return q.FakeQueue.Publish(ctx, reqs...)
}

// retryFixture is a fixture whose reaper publishes retries on a queue.
func retryFixture() (*fixture, *flakyQueue, *retries) {
	f := newFixture()
	q := &flakyQueue{FakeQueue: buildtest.NewQueue(f.clock.Now, buildtest.QueueOptions{})}
	obs := &retries{}
	f.reaper = f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Publisher, d.Observer = q, obs })
	return f, q, obs
}

// launched is f.running with the policy a dispatcher records at launch.
func (f *fixture) launched(t *testing.T, ref string, retries int, supersedable bool) build.Record {
	t.Helper()
	rec := f.running(t, ref)
	rec.LaunchingAt, rec.InfraRetries, rec.Supersedable = rec.StartedAt, retries, supersedable
	rec.SHA = "0123456789abcdef0123456789abcdef01234567"
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// infraEnd is the outcome of rec ended by cause.
func infraEnd(rec build.Record, cause build.InfraCause, at time.Time) build.Outcome {
	o := outcome(rec, build.StatusErrored, 137, at)
	o.Reason, o.Infra = "build pod was "+string(cause), cause
	return o
}

// queued returns the requests on q, oldest first.
func queued(t *testing.T, q *buildtest.FakeQueue) []build.Request {
	t.Helper()
	var out []build.Request
	for {
		msgs, err := q.Receive(t.Context(), 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return out
		}
		for _, m := range msgs {
			req, err := build.Decode(m.Body)
			if err != nil {
				t.Fatal(err)
			}
			if m.GroupID != req.LockKey() {
				t.Errorf("retry published in group %q, want its lock key %q", m.GroupID, req.LockKey())
			}
			out = append(out, req)
			if err := q.Delete(t.Context(), m.Receipt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRetryOfAnInfrastructureFailure ends a build by an eviction: the
// reaper records it errored, then records and publishes its retry, a build
// of its own with the same ref and SHA, attempt 2, linked to it; a repeated
// report makes no second retry.
func TestRetryOfAnInfrastructureFailure(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		f, q, obs := retryFixture()
		rec := f.launched(t, "main", 2, true)
		o := infraEnd(rec, build.InfraEvicted, f.clock.Now())
		for range 2 {
			if err := f.reaper.Handle(t.Context(), o); err != nil {
				t.Fatal(err)
			}
		}
		failed := recordOf(t, f, rec.BuildID)
		if failed.Status != build.StatusErrored || failed.Infra != build.InfraEvicted {
			t.Fatalf("failed build: %s (%q), want errored by eviction", failed.Status, failed.Infra)
		}
		reqs := queued(t, q.FakeQueue)
		if len(reqs) != 1 {
			t.Fatalf("%d requests published, want one retry", len(reqs))
		}
		want := build.Request{V: 1, BuildID: build.RetryID(rec.BuildID, failed.FinishedAt), Team: rec.Team, Project: rec.Project,
			Ref: rec.Ref, RefType: rec.RefType, SHA: rec.SHA, Trigger: rec.Trigger, RequestedAt: failed.FinishedAt}
		if diff := cmp.Diff(want, reqs[0]); diff != "" {
			t.Errorf("retry request (-want +got):\n%s", diff)
		}
		retry := recordOf(t, f, want.BuildID)
		if retry.Status != build.StatusQueued || retry.Attempt != 2 || retry.RetryOf != rec.BuildID || retry.SHA != rec.SHA {
			t.Errorf("retry record: %s, attempt %d, retryOf %s, sha %s; want queued, 2, %s, %s", retry.Status, retry.Attempt, retry.RetryOf, retry.SHA, rec.BuildID, rec.SHA)
		}
		if diff := cmp.Diff([]build.InfraCause{build.InfraEvicted}, obs.causes); diff != "" {
			t.Errorf("retries heard (-want +got):\n%s", diff)
		}
	})
}

// TestRetryCrashSafe fails the retry's publish (as a crash between the
// record and the publish would leave it): the outcome stays unhandled (the
// build is not removed), and the next report publishes the same retry, once.
func TestRetryCrashSafe(t *testing.T) {
	t.Parallel()
	f, q, obs := retryFixture()
	q.fails = 1
	rec := f.launched(t, "main", 2, true)
	o := infraEnd(rec, build.InfraKilled, f.clock.Now())
	if err := f.reaper.Handle(t.Context(), o); err == nil {
		t.Fatal("Handle() succeeded although the retry was not published")
	}
	if ids, _ := f.exec.Present(t.Context()); len(ids) != 1 {
		t.Errorf("build removed before its retry was published: present %v", ids)
	}
	if err := f.reaper.Handle(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	reqs := queued(t, q.FakeQueue)
	failed := recordOf(t, f, rec.BuildID)
	if len(reqs) != 1 || reqs[0].BuildID != build.RetryID(rec.BuildID, failed.FinishedAt) {
		t.Errorf("published %v, want the one retry", reqs)
	}
	if len(obs.causes) != 1 {
		t.Errorf("retries heard %v, want one", obs.causes)
	}
	if ids, _ := f.exec.Present(t.Context()); len(ids) != 0 {
		t.Errorf("build not removed once its retry was published: present %v", ids)
	}
}

// TestRetryCounts retries a build that keeps failing by infrastructure
// until its retries are used up: attempts 1 to 3 with two retries.
func TestRetryCounts(t *testing.T) {
	t.Parallel()
	f, q, _ := retryFixture()
	rec := f.launched(t, "main", 2, true)
	for attempt := 1; ; attempt++ {
		if err := f.reaper.Handle(t.Context(), infraEnd(rec, build.InfraNodeLost, f.clock.Now())); err != nil {
			t.Fatal(err)
		}
		reqs := queued(t, q.FakeQueue)
		if attempt == 3 {
			if len(reqs) != 0 {
				t.Errorf("attempt 3 of 2 retries was retried: %v", reqs)
			}
			return
		}
		if len(reqs) != 1 {
			t.Fatalf("attempt %d: %d retries published, want 1", attempt, len(reqs))
		}
		// The dispatcher starts the retry, with the descriptor's retries.
		next := recordOf(t, f, reqs[0].BuildID)
		if next.Attempt != attempt+1 || next.RetryOf != rec.BuildID {
			t.Fatalf("attempt %d's retry: attempt %d, retryOf %s; want %d, %s", attempt, next.Attempt, next.RetryOf, attempt+1, rec.BuildID)
		}
		if err := next.Launching(f.clock.Now(), 2, true); err != nil {
			t.Fatal(err)
		}
		if err := next.Start(f.clock.Now(), next.BuildID.PodName(), "c0ffee"); err != nil {
			t.Fatal(err)
		}
		if err := f.records.Save(t.Context(), next); err != nil {
			t.Fatal(err)
		}
		f.launch(t, build.Job{Request: reqs[0]})
		f.clock.Advance(time.Minute)
		rec = next
	}
}

// TestNoRetry: a script's failure, a timeout, a cancel, a supersede, no
// retries left or none at all, and a request that a newer one supersedes
// are not retried; a failure of a build that newer requests do not
// supersede (an exempt ref) is, even with a newer request waiting.
func TestNoRetry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T, f *fixture) build.Outcome
		retry bool
	}{
		{"script failed", func(t *testing.T, f *fixture) build.Outcome {
			return outcome(f.launched(t, "main", 2, true), build.StatusFailed, 1, f.clock.Now())
		}, false},
		{"timed out", func(t *testing.T, f *fixture) build.Outcome {
			return outcome(f.launched(t, "main", 2, true), build.StatusTimedOut, 143, f.clock.Now())
		}, false},
		{"cancelled", func(t *testing.T, f *fixture) build.Outcome {
			rec := f.launched(t, "main", 2, true)
			if err := rec.RequestCancel(f.clock.Now()); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			return infraEnd(rec, build.InfraDeleted, f.clock.Now())
		}, false},
		{"superseded", func(t *testing.T, f *fixture) build.Outcome {
			rec := f.launched(t, "main", 2, true)
			if err := rec.RequestSupersede(f.clock.Now(), build.NewID(f.clock.Now())); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			return infraEnd(rec, build.InfraDeleted, f.clock.Now())
		}, false},
		{"no retries", func(t *testing.T, f *fixture) build.Outcome {
			return infraEnd(f.launched(t, "main", 0, true), build.InfraEvicted, f.clock.Now())
		}, false},
		{"newer request waits", func(t *testing.T, f *fixture) build.Outcome {
			rec := f.launched(t, "main", 2, true)
			f.waiting(t, rec)
			return infraEnd(rec, build.InfraEvicted, f.clock.Now())
		}, false},
		{"newer request waits, exempt ref", func(t *testing.T, f *fixture) build.Outcome {
			rec := f.launched(t, "main", 2, false)
			f.waiting(t, rec)
			return infraEnd(rec, build.InfraEvicted, f.clock.Now())
		}, true},
		{"a newer request of another ref", func(t *testing.T, f *fixture) build.Outcome {
			rec := f.launched(t, "main", 2, true)
			other := rec
			other.Ref = "dev"
			f.waiting(t, other)
			return infraEnd(rec, build.InfraEvicted, f.clock.Now())
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, q, obs := retryFixture()
			o := tc.setup(t, f)
			if err := f.reaper.Handle(t.Context(), o); err != nil {
				t.Fatal(err)
			}
			reqs := queued(t, q.FakeQueue)
			if got := len(reqs) == 1 && len(obs.causes) == 1; got != tc.retry || len(reqs) > 1 {
				t.Errorf("published %v, heard %v; want a retry: %t", reqs, obs.causes, tc.retry)
			}
		})
	}
}

// waiting records a request of like's lock key accepted after it.
func (f *fixture) waiting(t *testing.T, like build.Record) {
	t.Helper()
	f.clock.Advance(time.Second)
	req := build.Request{V: 1, BuildID: build.NewID(f.clock.Now()), Team: like.Team, Project: like.Project, Ref: like.Ref,
		RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: f.clock.Now()}
	if err := f.records.Save(t.Context(), build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
}

// TestReconcileRetriesAPodDeletedUnseen: a build whose Pod disappeared
// while no reaper watched is an infrastructure failure (deleted), and is
// retried.
func TestReconcileRetriesAPodDeletedUnseen(t *testing.T) {
	t.Parallel()
	f, q, obs := retryFixture()
	rec := f.launched(t, "main", 2, true)
	f.exec.Vanish(rec.BuildID)
	if err := f.reaper.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := recordOf(t, f, rec.BuildID); got.Status != build.StatusErrored || got.Infra != build.InfraDeleted {
		t.Errorf("record %s (%q), want errored, deleted", got.Status, got.Infra)
	}
	if reqs := queued(t, q.FakeQueue); len(reqs) != 1 || len(obs.causes) != 1 || obs.causes[0] != build.InfraDeleted {
		t.Errorf("published %v, heard %v; want one retry after deleted", reqs, obs.causes)
	}
}

// TestSweepStopsASupersededBuild: a running build that a newer request
// superseded (supersede.running) is stopped by the cancel sweep, as a
// cancel is, and its end is recorded superseded, naming the newer build.
func TestSweepStopsASupersededBuild(t *testing.T) {
	t.Parallel()
	f, q, _ := retryFixture()
	rec := f.launched(t, "main", 2, true)
	newer := build.NewID(f.clock.Now().Add(time.Second))
	if err := rec.RequestSupersede(f.clock.Now(), newer); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	if err := f.reaper.SweepCancels(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.exec.Cancelled(); len(got) != 1 || got[0] != rec.BuildID {
		t.Fatalf("stopped %v, want %s", got, rec.BuildID)
	}
	// The fake reports a stop as the entrypoint does: cancelled, 143.
	o := outcome(rec, build.StatusCancelled, 143, f.clock.Now())
	o.Reason = "cancelled"
	if err := f.reaper.Handle(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	got := recordOf(t, f, rec.BuildID)
	if got.Status != build.StatusSuperseded || got.Reason != "superseded by "+string(newer) || got.SupersededBy != newer {
		t.Errorf("record %s %q by %q, want superseded by %s", got.Status, got.Reason, got.SupersededBy, newer)
	}
	if reqs := queued(t, q.FakeQueue); len(reqs) != 0 {
		t.Errorf("a superseded build was retried: %v", reqs)
	}
}

// staleRecords runs hook once, right after the first Get of id has read
// the record: another writer moves the record on between a reaper's read
// and its write.
type staleRecords struct {
	reap.Records
	id   build.ID
	once sync.Once
	hook func()
}

func (s *staleRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	rec, err := s.Records.Get(ctx, id)
	if id == s.id {
		s.once.Do(s.hook)
	}
	return rec, err
}

// TestRetryAfterLosingTheEndRace: two reapers handle the end of one build
// at once (two replicas, or Reconcile beside Watch), each with its own
// finish time. The one whose final record lost the write retries the build
// as it is stored, not as it would have written it: one retry in all.
func TestRetryAfterLosingTheEndRace(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		f, q, obs := retryFixture()
		rec := f.launched(t, "main", 2, false)
		first := infraEnd(rec, build.InfraDeleted, f.clock.Now())
		second := first
		second.FinishedAt = first.FinishedAt.Add(3 * time.Second) // the other reaper's now
		stale := &staleRecords{Records: f.records, id: rec.BuildID, hook: func() {
			if err := f.reaper.Handle(t.Context(), first); err != nil {
				t.Errorf("first reaper: %v", err)
			}
		}}
		late := f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Records, d.Publisher, d.Observer = stale, q, obs })
		if err := late.Handle(t.Context(), second); err != nil {
			t.Fatal(err)
		}
		failed := recordOf(t, f, rec.BuildID)
		reqs := queued(t, q.FakeQueue)
		if len(reqs) != 1 || reqs[0].BuildID != build.RetryID(rec.BuildID, failed.FinishedAt) {
			t.Errorf("published %v, want only the retry of the stored end (%s)", reqs, build.RetryID(rec.BuildID, failed.FinishedAt))
		}
		if len(obs.causes) != 1 {
			t.Errorf("retries heard %v, want one", obs.causes)
		}
	})
}

// TestNoRetryOfABuildCancelledMeanwhile: a build launched by a dispatcher
// that died before recording it running is cancelled (a waiting request)
// while the reaper ends it by a launch interrupted: the stored record says
// cancelled, and a cancel is never retried.
func TestNoRetryOfABuildCancelledMeanwhile(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		f, q, obs := retryFixture()
		req := build.Request{V: 1, BuildID: build.NewID(f.clock.Now()), Team: "decap-ci", Project: "hello", Ref: "main",
			RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: f.clock.Now()}
		rec := build.RecordFor(req)
		if err := rec.Launching(f.clock.Now(), 2, false); err != nil {
			t.Fatal(err)
		}
		if err := f.records.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		f.launch(t, build.Job{Request: req})
		o := infraEnd(rec, build.InfraLaunchInterrupted, f.clock.Now())
		stale := &staleRecords{Records: f.records, id: rec.BuildID, hook: func() {
			cur, err := f.records.Get(t.Context(), rec.BuildID)
			if err == nil {
				err = cur.Cancel(f.clock.Now(), "someone")
			}
			if err == nil {
				err = f.records.Save(t.Context(), cur)
			}
			if err != nil {
				t.Errorf("cancel: %v", err)
			}
		}}
		r := f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Records, d.Publisher, d.Observer = stale, q, obs })
		if err := r.Handle(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		if got := recordOf(t, f, rec.BuildID); got.Status != build.StatusCancelled {
			t.Errorf("record %s, want cancelled", got.Status)
		}
		if reqs := queued(t, q.FakeQueue); len(reqs) != 0 || len(obs.causes) != 0 {
			t.Errorf("a cancelled build was retried: published %v, heard %v", reqs, obs.causes)
		}
	})
}
