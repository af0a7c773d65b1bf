package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

// during makes every launch run hook first: what happens meanwhile
// elsewhere.
func (f *fixture) during(hook func(job build.Job)) {
	f.launcher.OnLaunch(func(_ context.Context, job build.Job) error {
		hook(job)
		return nil
	})
}

// logLines collects JSON log lines; safe for concurrent use.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// at returns the lines logged at level, decoded.
func (l *logLines) at(t *testing.T, level string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["level"] == level {
			out = append(out, m)
		}
	}
	return out
}

// deps returns f's dispatcher dependencies, its executor launching and
// stopping builds, with a logger writing to logs.
func (f *fixture) deps(logs *logLines) dispatch.Deps {
	return dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem, Records: f.records,
		Launches: f.withLaunches(), Launcher: f.launcher, Canceller: f.launcher, Logger: slog.New(slog.NewJSONHandler(logs, nil)), Now: f.clock.Now,
	}
}

// leaseOf returns the unexpired lease of id; ok false if it holds none.
func leaseOf(t *testing.T, locks buildtest.Locks, id build.ID) (build.Lease, bool) {
	t.Helper()
	leases, err := locks.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.BuildID == id {
			return l, true
		}
	}
	return build.Lease{}, false
}

// flakyExtend fails the first fails calls of Extend as an unreachable store
// would.
type flakyExtend struct {
	*buildtest.FakeLocks
	mu    sync.Mutex
	fails int
}

func (l *flakyExtend) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	l.mu.Lock()
	fail := l.fails > 0
	l.fails--
	l.mu.Unlock()
	if fail {
		return fmt.Errorf("extend lock %s: %w", key, build.ErrUnavailable)
	}
	return l.FakeLocks.Extend(ctx, key, id, until)
}

// TestLaunchedBuildKeepsItsLock checks that a build started now ends up
// holding its lock and slot with the running lease (timeout + RunGrace from
// its start) when its launch outlasted the launch lease or Extend failed
// for a while, and that it is logged as an error, with its build and lock
// key, when it cannot.
func TestLaunchedBuildKeepsItsLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const slowLaunch = 3 * time.Minute // longer than LaunchLease (2m)
	cases := []struct {
		name string
		// during runs while the build launches.
		during func(t *testing.T, f *fixture, req build.Request)
		// flaky Extend calls fail first.
		flaky        int
		wantUnlocked bool
	}{
		{
			name:   "launch slower than the launch lease",
			during: func(t *testing.T, f *fixture, req build.Request) { f.clock.Advance(slowLaunch) },
		},
		{
			name:  "extend fails for a while",
			flaky: keepRetries,
		},
		{
			name:   "slow launch and extend fails for a while",
			during: func(t *testing.T, f *fixture, req build.Request) { f.clock.Advance(slowLaunch) },
			flaky:  1,
		},
		{
			name: "slow launch, and another build took the key meanwhile",
			during: func(t *testing.T, f *fixture, req build.Request) {
				f.clock.Advance(slowLaunch)
				now := f.clock.Now()
				other := build.Lease{Key: req.LockKey(), BuildID: build.NewID(now), Owner: "x", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
				if err := f.locks.Acquire(ctx, other, f.cfg.Cap); err != nil {
					t.Errorf("other build's Acquire() error = %v", err)
				}
			},
			wantUnlocked: true,
		},
		{
			name: "slow launch, and another build took the last slot meanwhile",
			during: func(t *testing.T, f *fixture, req build.Request) {
				f.clock.Advance(slowLaunch)
				now := f.clock.Now()
				for i := range f.cfg.Cap {
					other := build.Lease{Key: fmt.Sprintf("decap-ci/hello/b%d", i), BuildID: build.NewID(now), Owner: "x", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
					if err := f.locks.Acquire(ctx, other, f.cfg.Cap); err != nil {
						t.Errorf("other build's Acquire() error = %v", err)
					}
				}
			},
			wantUnlocked: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buildtest.BothWays(t, func(t *testing.T, separate bool) {
				f := newFixture(2, buildtest.NewClock(t0))
				f.separate = separate
				req := request("decap-ci/hello", "main", build.TriggerPush, f.clock.Now())
				var started time.Time
				f.during(func(build.Job) {
					if tc.during != nil {
						tc.during(t, f, req)
					}
					started = f.clock.Now()
				})
				logs := &logLines{}
				deps := f.deps(logs)
				deps.Locks = &flakyExtend{FakeLocks: f.locks, fails: tc.flaky}
				dec := dispatch.New(f.cfg, deps).Decide(ctx, req, message(t, req))
				if dec.Action != dispatch.Launched || dec.Cause != dispatch.CauseStarted {
					t.Fatalf("decision %v %s (%s), want launched, started", dec.Action, dec.Cause, dec.Reason)
				}
				if dec.Unlocked != tc.wantUnlocked {
					t.Errorf("decision Unlocked = %t, want %t", dec.Unlocked, tc.wantUnlocked)
				}
				errs := logs.at(t, "ERROR")
				if tc.wantUnlocked {
					if _, ok := leaseOf(t, f.locks, req.BuildID); ok {
						t.Errorf("build holds a lease although another build took the key or slot")
					}
					if len(errs) != 1 || errs[0]["build_id"] != string(req.BuildID) || errs[0]["lock_key"] != req.LockKey() ||
						!strings.Contains(fmt.Sprint(errs[0]["msg"]), "without its lock") {
						t.Errorf("error log lines = %v, want one saying build %s of %s runs without its lock", errs, req.BuildID, req.LockKey())
					}
					return
				}
				if len(errs) != 0 {
					t.Errorf("error log lines = %v, want none", errs)
				}
				lease, ok := leaseOf(t, f.locks, req.BuildID)
				if deadline := started.Add(req2timeout(t, f, req)); !ok || lease.ExpiresAt.Before(deadline) {
					t.Fatalf("lease = %+v (held %t), want one expiring no earlier than the build's deadline %v", lease, ok, deadline)
				}
				// The lock and the slot hold for the running build.
				next := request("decap-ci/hello", "main", build.TriggerPush, f.clock.Now())
				if dec := dispatch.New(f.cfg, f.deps(logs)).Decide(ctx, next, message(t, next)); dec.Action != dispatch.Deferred || dec.Cause != dispatch.CauseLocked {
					t.Errorf("next build of the key: %v %s, want deferred, locked", dec.Action, dec.Cause)
				}
			})
		})
	}
}

// keepRetries is how many Extend failures in a row Decide rides out.
const keepRetries = 3

// A build that ended during its slow launch (the reaper recorded it and
// released the lock) is not locked again.
func TestBuildEndedDuringSlowLaunchHoldsNoLock(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := newFixture(2, buildtest.NewClock(t0))
		f.separate = separate
		req := request("decap-ci/hello", "main", build.TriggerPush, f.clock.Now())
		f.during(func(build.Job) {
			f.clock.Advance(3 * time.Minute)
			rec := build.RecordFor(req)
			rec.Status, rec.FinishedAt = build.StatusSucceeded, f.clock.Now()
			if err := f.records.Save(ctx, rec); err != nil {
				t.Error(err)
			}
			if _, err := f.locks.Release(ctx, req.LockKey(), req.BuildID); err != nil {
				t.Error(err)
			}
		})
		logs := &logLines{}
		if dec := dispatch.New(f.cfg, f.deps(logs)).Decide(ctx, req, message(t, req)); dec.Action != dispatch.Launched || dec.Unlocked {
			t.Fatalf("decision %v (%s), unlocked %t; want launched, not unlocked", dec.Action, dec.Reason, dec.Unlocked)
		}
		if lease, ok := leaseOf(t, f.locks, req.BuildID); ok {
			t.Errorf("the ended build holds %+v", lease)
		}
		if errs := logs.at(t, "ERROR"); len(errs) != 0 {
			t.Errorf("error log lines = %v, want none", errs)
		}
	})
}

// staleFirstRead answers the first Get with the record as it was before
// another replica recorded the build running: the window in which two
// replicas decide one request (its visibility lapsed).
type staleFirstRead struct {
	*buildtest.FakeRecords
	stale build.Record
	once  sync.Once
}

func (r *staleFirstRead) Get(ctx context.Context, id build.ID) (build.Record, error) {
	stale := false
	r.once.Do(func() { stale = true })
	if stale {
		return r.stale, nil
	}
	return r.FakeRecords.Get(ctx, id)
}

// TestSecondReplicaKeepsTheRunningLease has a second replica decide a
// request that another replica launched meanwhile: its first read still
// says queued, so it takes the lock (with the launch lease), and under the
// lock finds the build running. The build keeps its running lease, also
// when its lease was lost and the second replica took the lock anew.
func TestSecondReplicaKeepsTheRunningLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, held := range []bool{true, false} {
		t.Run(fmt.Sprintf("lease held %t", held), func(t *testing.T) {
			t.Parallel()
			buildtest.BothWays(t, func(t *testing.T, separate bool) {
				f := newFixture(2, buildtest.NewClock(t0))
				f.separate = separate
				req := request("decap-ci/hello", "main", build.TriggerPush, f.clock.Now())
				queued := build.RecordFor(req)
				running := queued
				running.Status, running.StartedAt, running.PodName = build.StatusRunning, f.clock.Now(), req.BuildID.PodName()
				if err := f.records.Save(ctx, running); err != nil {
					t.Fatal(err)
				}
				deadline := running.StartedAt.Add(req2timeout(t, f, req))
				if held {
					l := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: "replica-1", AcquiredAt: f.clock.Now(), ExpiresAt: deadline.Add(10 * time.Minute)}
					if err := f.locks.Acquire(ctx, l, f.cfg.Cap); err != nil {
						t.Fatal(err)
					}
				}
				f.clock.Advance(30 * time.Second)
				deps := f.deps(&logLines{})
				deps.Records = &staleFirstRead{FakeRecords: f.records, stale: queued}
				dec := dispatch.New(f.cfg, deps).Decide(ctx, req, message(t, req))
				if dec.Action != dispatch.Launched || dec.Cause != dispatch.CauseAlreadyRunning {
					t.Fatalf("decision %v %s (%s), want launched, already running", dec.Action, dec.Cause, dec.Reason)
				}
				lease, ok := leaseOf(t, f.locks, req.BuildID)
				if !ok || lease.ExpiresAt.Before(deadline) {
					t.Errorf("lease = %+v (held %t), want one expiring no earlier than the build's deadline %v", lease, ok, deadline)
				}
				if n := len(f.launcher.Launched()); n != 0 {
					t.Errorf("launched %d builds, want none", n)
				}
			})
		})
	}
}

// TestCancelledWhileLaunchingIsStopped cancels a build while a dispatcher
// launches it: the cancel (ingest) records it cancelled and finds no process
// to stop yet; the dispatcher's running record then conflicts, and the
// dispatcher stops the build it launched.
func TestCancelledWhileLaunchingIsStopped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name       string
		end        build.Status // recorded while the build launches
		canceller  bool
		wantStop   bool
		wantAction dispatch.Action
	}{
		{name: "cancelled", end: build.StatusCancelled, canceller: true, wantStop: true, wantAction: dispatch.Dropped},
		{name: "cancelled, no canceller", end: build.StatusCancelled, wantAction: dispatch.Dropped},
		{name: "ended", end: build.StatusSucceeded, canceller: true, wantAction: dispatch.Launched},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buildtest.BothWays(t, func(t *testing.T, separate bool) {
				f := newFixture(2, buildtest.NewClock(t0))
				f.separate = separate
				req := request("decap-ci/hello", "main", build.TriggerPush, f.clock.Now())
				f.during(func(build.Job) {
					rec := record(t, f, req.BuildID)
					rec.Status, rec.FinishedAt, rec.Reason = tc.end, f.clock.Now(), "by octocat"
					if err := f.records.Save(ctx, rec); err != nil {
						t.Error(err)
					}
				})
				deps := f.deps(&logLines{})
				if !tc.canceller {
					deps.Canceller = nil
				}
				dec := dispatch.New(f.cfg, deps).Decide(ctx, req, message(t, req))
				if dec.Action != tc.wantAction {
					t.Errorf("decision %v %s (%s), want %v", dec.Action, dec.Cause, dec.Reason, tc.wantAction)
				}
				var want []build.ID
				if tc.wantStop {
					want = []build.ID{req.BuildID}
				}
				if got := f.launcher.Cancelled(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("stopped %v, want %v", got, want)
				}
				if got := record(t, f, req.BuildID); got.Status != tc.end {
					t.Errorf("record status %s, want %s", got.Status, tc.end)
				}
				// The lock stays until the reaper sees the build end.
				if _, ok := leaseOf(t, f.locks, req.BuildID); !ok {
					t.Errorf("lock released before the build ended")
				}
			})
		})
	}
}
