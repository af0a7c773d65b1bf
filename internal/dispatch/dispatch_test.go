package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

// finishOne ends one running build (any) the way the reaper does: it
// stops running, then its lock is released. False when none runs.
func (f *fixture) finishOne(ctx context.Context) bool {
	running := f.launcher.Running()
	if len(running) == 0 {
		return false
	}
	id := running[0]
	job, _ := f.launcher.Job(id)
	f.launcher.Finish(id, build.StatusSucceeded, 0)
	if _, err := f.locks.Release(ctx, job.Request.LockKey(), id); err != nil {
		panic(err)
	}
	return true
}

// slowly makes every launch wait until release is closed, like an API
// server that hangs; it returns release.
func (f *fixture) slowly() chan struct{} {
	release := make(chan struct{})
	f.launcher.OnLaunch(func(context.Context, build.Job) error {
		<-release
		return nil
	})
	return release
}

type fixture struct {
	clock    *buildtest.Clock
	queue    *buildtest.FakeQueue
	locks    *buildtest.FakeLocks
	idem     *buildtest.FakeIdempotency
	records  *buildtest.FakeRecords
	catalog  *buildtest.Catalog
	launcher *buildtest.FakeExecutor
	// launches writes a launch's claim and start at once, as the embedded
	// store does; with separate the dispatcher makes separate calls, as
	// on AWS.
	launches *buildtest.FakeOneWrite
	separate bool
	cfg      dispatch.Config
}

// withLaunches returns launches, or nil when f makes separate calls.
func (f *fixture) withLaunches() build.Launches {
	if f.separate {
		return nil
	}
	return f.launches
}

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

func newFixture(cap int, clock *buildtest.Clock) *fixture {
	now := time.Now
	if clock != nil {
		now = clock.Now
	}
	f := &fixture{
		clock:   clock,
		queue:   buildtest.NewQueue(now, buildtest.QueueOptions{}),
		locks:   buildtest.NewLocks(now),
		idem:    buildtest.NewIdempotency(now),
		records: buildtest.NewRecords(),
		catalog: buildtest.NewCatalog("c0ffee", map[string]string{
			"Codertocat/Hello-World": `{"buildImage":"debian:bookworm-slim","managedRefRegex":"master|main"}`,
			"decap-ci/hello":         `{"buildImage":"debian:bookworm-slim","buildTimeoutSeconds":600}`,
			"decap-ci/broken":        `{"buildImage":"x","managedRefRegex":"(unclosed"}`,
		}),
		cfg: dispatch.Config{Owner: "test", Cap: cap, BackoffBase: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond},
	}
	f.launcher = buildtest.NewExecutor(now)
	f.launches = buildtest.NewOneWrite(f.locks, f.records, f.queue)
	return f
}

func (f *fixture) dispatcher(now func() time.Time) *dispatch.Dispatcher {
	if now == nil {
		now = time.Now
		if f.clock != nil {
			now = f.clock.Now
		}
	}
	return dispatch.New(f.cfg, dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem,
		Records: f.records, Launches: f.withLaunches(), Launcher: f.launcher, Now: now,
	})
}

func request(project, ref string, trigger build.Trigger, at time.Time) build.Request {
	team, proj, _ := strings.Cut(project, "/")
	return build.Request{V: 1, BuildID: build.NewID(at), Team: team, Project: proj, Ref: ref, RefType: build.Branch,
		Trigger: trigger, RequestedAt: at, DeliveryID: "delivery-" + string(build.NewID(at))}
}

func message(t *testing.T, req build.Request) build.Message {
	t.Helper()
	body, err := build.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	return build.Message{ID: "m-" + string(req.BuildID), Receipt: "r", GroupID: req.LockKey(), Body: body, ReceiveCount: 1, SentAt: req.RequestedAt}
}

func record(t *testing.T, f *fixture, id build.ID) build.Record {
	t.Helper()
	r, err := f.records.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("record %s: %v", id, err)
	}
	return r
}

func TestDecide(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name        string
		req         func(now time.Time) build.Request
		setup       func(f *fixture, req build.Request)
		want        dispatch.Action
		wantStatus  build.Status
		wantReason  string
		wantStarted int
	}{
		{name: "managed push launches", req: func(now time.Time) build.Request {
			return request("Codertocat/Hello-World", "master", build.TriggerPush, now)
		}, want: dispatch.Launched, wantStatus: build.StatusRunning, wantStarted: 1},
		{name: "unmanaged push is skipped", req: func(now time.Time) build.Request {
			return request("Codertocat/Hello-World", "master-old", build.TriggerPush, now)
		}, want: dispatch.Dropped, wantStatus: build.StatusSkipped, wantReason: "managedRefRegex"},
		{name: "unmanaged ref by hand launches", req: func(now time.Time) build.Request {
			return request("Codertocat/Hello-World", "experiment", build.TriggerManual, now)
		}, want: dispatch.Launched, wantStatus: build.StatusRunning, wantStarted: 1},
		{name: "unknown project is skipped", req: func(now time.Time) build.Request {
			return request("nobody/nothing", "main", build.TriggerPush, now)
		}, want: dispatch.Dropped, wantStatus: build.StatusSkipped, wantReason: "not in the build-scripts repository"},
		{name: "invalid project.json is skipped", req: func(now time.Time) build.Request {
			return request("decap-ci/broken", "main", build.TriggerAPI, now)
		}, want: dispatch.Dropped, wantStatus: build.StatusSkipped, wantReason: "project decap-ci/broken is not buildable: project.json: managedRefRegex does not compile"},
		{name: "busy branch defers", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now)
		}, setup: func(f *fixture, req build.Request) {
			other := build.Lease{Key: req.LockKey(), BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if err := f.locks.Acquire(ctx, other, 0); err != nil {
				t.Fatal(err)
			}
		}, want: dispatch.Deferred, wantStatus: build.StatusDeferred, wantReason: "another build"},
		{name: "cap defers", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now)
		}, setup: func(f *fixture, req build.Request) {
			for i := range 2 {
				l := build.Lease{Key: fmt.Sprintf("decap-ci/hello/b%d", i), BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
				if err := f.locks.Acquire(ctx, l, 0); err != nil {
					t.Fatal(err)
				}
			}
		}, want: dispatch.Deferred, wantStatus: build.StatusDeferred, wantReason: "cap of 2"},
		{name: "too old and still locked out expires", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now.Add(-25*time.Hour))
		}, setup: func(f *fixture, req build.Request) {
			other := build.Lease{Key: req.LockKey(), BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if err := f.locks.Acquire(ctx, other, 0); err != nil {
				t.Fatal(err)
			}
		}, want: dispatch.Dropped, wantStatus: build.StatusExpired, wantReason: "longer than"},
		// It may have been launched by a replica that died before recording
		// it; launching is idempotent, expiring it would hide a running build.
		{name: "too old but its lock is free launches", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now.Add(-25*time.Hour))
		}, want: dispatch.Launched, wantStatus: build.StatusRunning, wantStarted: 1},
		{name: "transient launch failure defers and frees the lock", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now)
		}, setup: func(f *fixture, req build.Request) { f.launcher.FailLaunch(errors.New("executor down")) },
			want: dispatch.Deferred, wantStatus: build.StatusQueued},
		{name: "permanent launch failure errors", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now)
		}, setup: func(f *fixture, req build.Request) {
			f.launcher.FailLaunch(fmt.Errorf("%w: bad image", build.ErrInvalid))
		},
			want: dispatch.Dropped, wantStatus: build.StatusErrored, wantReason: "bad image"},
		{name: "already final is dropped", req: func(now time.Time) build.Request {
			return request("decap-ci/hello", "main", build.TriggerPush, now)
		}, setup: func(f *fixture, req build.Request) {
			rec := build.RecordFor(req)
			rec.Status = build.StatusSucceeded
			f.records.Save(ctx, rec)
		}, want: dispatch.Dropped, wantStatus: build.StatusSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			buildtest.BothWays(t, func(t *testing.T, separate bool) {
				clock := buildtest.NewClock(t0)
				f := newFixture(2, clock)
				f.separate = separate
				req := tt.req(clock.Now())
				if tt.setup != nil {
					tt.setup(f, req)
				}
				dec := f.dispatcher(nil).Decide(ctx, req, message(t, req))
				if dec.Action != tt.want {
					t.Fatalf("action = %v (%s), want %v", dec.Action, dec.Reason, tt.want)
				}
				rec := record(t, f, req.BuildID)
				if rec.Status != tt.wantStatus || !strings.Contains(rec.Reason, tt.wantReason) {
					t.Errorf("record status %q reason %q, want %q with %q", rec.Status, rec.Reason, tt.wantStatus, tt.wantReason)
				}
				if got := len(f.launcher.Launched()); got != tt.wantStarted {
					t.Errorf("started %d builds, want %d", got, tt.wantStarted)
				}
				leases, _ := f.locks.List(ctx)
				held := false
				for _, l := range leases {
					if l.BuildID == req.BuildID {
						held = true
						// A running build's lease covers its timeout.
						if min := clock.Now().Add(req2timeout(t, f, req)); l.ExpiresAt.Before(min) {
							t.Errorf("lease expires %v, before the build's deadline %v", l.ExpiresAt, min)
						}
					}
				}
				if held != (tt.want == dispatch.Launched) {
					t.Errorf("lock held = %v after %v", held, tt.want)
				}
				if tt.want == dispatch.Deferred && tt.wantStatus == build.StatusDeferred && !rec.NextAttemptAt.After(clock.Now()) {
					t.Errorf("deferred record's NextAttemptAt %v is not in the future", rec.NextAttemptAt)
				}
			})
		})
	}
}

func req2timeout(t *testing.T, f *fixture, req build.Request) time.Duration {
	d, _, err := f.catalog.Lookup(req.Team, req.Project)
	if err != nil {
		t.Fatal(err)
	}
	return d.Timeout()
}

func TestDuplicateDeliveryBuildsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := buildtest.NewClock(t0)
	f := newFixture(0, clock)
	d := f.dispatcher(nil)
	first := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
	if dec := d.Decide(ctx, first, message(t, first)); dec.Action != dispatch.Launched {
		t.Fatalf("first delivery: %v (%s)", dec.Action, dec.Reason)
	}
	// SQS redelivers the very same message (e.g. the delete was lost).
	if dec := d.Decide(ctx, first, message(t, first)); dec.Action != dispatch.Launched || dec.BuildID != first.BuildID {
		t.Fatalf("same message again: %v %s, want launched %s (already)", dec.Action, dec.BuildID, first.BuildID)
	}
	// GitHub redelivers days later, past SQS's dedup window; ingest gives it
	// a fresh build ID.
	clock.Advance(72 * time.Hour)
	again := first
	again.BuildID, again.RequestedAt = build.NewID(clock.Now()), clock.Now()
	dec := d.Decide(ctx, again, message(t, again))
	if dec.Action != dispatch.Dropped || !strings.Contains(dec.Reason, "duplicate delivery") {
		t.Fatalf("redelivered webhook: %v (%s), want dropped as duplicate", dec.Action, dec.Reason)
	}
	if got := record(t, f, again.BuildID); got.Status != build.StatusSkipped {
		t.Errorf("duplicate's record status = %s, want skipped", got.Status)
	}
	if got := f.launcher.Launched(); len(got) != 1 || got[0] != first.BuildID {
		t.Errorf("started %v, want only %s", got, first.BuildID)
	}
}

func TestProducerWithoutBuildID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := buildtest.NewClock(t0)
	f := newFixture(0, clock)
	d := f.dispatcher(nil)
	body := []byte(`{"v":1,"team":"decap-ci","project":"hello","ref":"main","refType":"branch","trigger":"api","requestedAt":"2026-11-27T02:59:00Z","requestedBy":"cron","extra":"ignored"}`)
	m := build.Message{ID: "sqs-message-1", Receipt: "r1", GroupID: "decap-ci/hello/main", Body: body, ReceiveCount: 1}
	dec := d.Handle(ctx, m)
	if dec.Action != dispatch.Launched || dec.BuildID == "" {
		t.Fatalf("Handle: %v %q (%s), want launched with an assigned id", dec.Action, dec.BuildID, dec.Reason)
	}
	// Redelivery of the same queue message: same build, nothing new.
	m.ReceiveCount = 2
	if again := d.Handle(ctx, m); again.BuildID != dec.BuildID {
		t.Errorf("redelivery built as %s, want %s", again.BuildID, dec.BuildID)
	}
	if got := len(f.launcher.Launched()); got != 1 {
		t.Errorf("started %d builds, want 1", got)
	}
	if rec := record(t, f, dec.BuildID); rec.RequestedBy != "cron" || rec.Trigger != build.TriggerAPI {
		t.Errorf("record = %+v, want requestedBy cron, trigger api", rec)
	}
}

func TestMalformedMessageDeadLettered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(0, nil)
	d := f.dispatcher(nil)
	for _, body := range []string{`not json`, `{"v":1,"team":"../x","project":"p","ref":"main","refType":"branch","trigger":"api","requestedAt":"2026-11-27T00:00:00Z"}`, `{"v":9}`} {
		if err := f.queue.SendRaw(ctx, "g", "", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		msgs, err := f.queue.Receive(ctx, 1, time.Second)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("receive: %v %d", err, len(msgs))
		}
		if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Dropped {
			t.Errorf("malformed %q: %v, want dropped", msgs[0].Body, dec.Action)
		}
	}
	dls := f.queue.DeadLetters()
	if len(dls) != 3 {
		t.Fatalf("dead letters = %d, want 3", len(dls))
	}
	for _, dl := range dls {
		if !strings.Contains(dl.Reason, "malformed build request") {
			t.Errorf("dead letter reason %q does not say why", dl.Reason)
		}
	}
	if st, _ := f.queue.Stats(ctx); st.Visible+st.InFlight != 0 {
		t.Errorf("queue still holds %+v", st)
	}
	if len(f.launcher.Launched()) != 0 {
		t.Errorf("a malformed message launched a build")
	}
}

// runDispatchers runs n dispatchers on f until ctx ends.
func runDispatchers(ctx context.Context, t *testing.T, f *fixture, n int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := f.cfg
			cfg.WaitTime = 200 * time.Millisecond
			cfg.Workers = 4
			d := dispatch.New(cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
				Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Now: time.Now})
			if err := d.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	return &wg
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTwoPushesToOneBranchRunInOrder(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := newFixture(0, nil)
		f.separate = separate
		now := time.Now()
		first := request("decap-ci/hello", "main", build.TriggerPush, now)
		second := request("decap-ci/hello", "main", build.TriggerPush, now.Add(time.Millisecond))
		if err := f.queue.Publish(ctx, first, second); err != nil {
			t.Fatal(err)
		}
		wg := runDispatchers(ctx, t, f, 2)
		waitFor(t, "the first build", func() bool { return len(f.launcher.Launched()) == 1 })
		// While the first runs, the second waits however often it is tried.
		time.Sleep(150 * time.Millisecond)
		if got := f.launcher.Launched(); len(got) != 1 || got[0] != first.BuildID {
			t.Fatalf("started %v while the first build runs, want only %s", got, first.BuildID)
		}
		waitFor(t, "the second request to be deferred", func() bool {
			r, err := f.records.Get(ctx, second.BuildID)
			return err == nil && r.Status == build.StatusDeferred
		})
		f.finishOne(ctx)
		waitFor(t, "the second build", func() bool { return len(f.launcher.Launched()) == 2 })
		if got := f.launcher.Launched(); got[1] != second.BuildID {
			t.Errorf("second build = %s, want %s", got[1], second.BuildID)
		}
		cancel()
		wg.Wait()
		if v := f.launcher.Overlaps(); len(v) > 0 {
			t.Errorf("violations: %v", v)
		}
	})
}

func TestCapHoldsAcrossDispatchers(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const cap, branches, perBranch = 3, 12, 2
		f := newFixture(cap, nil)
		f.separate = separate
		var reqs []build.Request
		now := time.Now()
		for b := range branches {
			for i := range perBranch {
				reqs = append(reqs, request("decap-ci/hello", fmt.Sprintf("branch-%02d", b), build.TriggerPush, now.Add(time.Duration(b*perBranch+i)*time.Microsecond)))
			}
		}
		if err := f.queue.Publish(ctx, reqs...); err != nil {
			t.Fatal(err)
		}
		wg := runDispatchers(ctx, t, f, 3)
		// The "reaper": end running builds one at a time until all ran.
		waitFor(t, "every build to run", func() bool {
			f.finishOne(ctx)
			return len(f.launcher.Launched()) == len(reqs)
		})
		for f.finishOne(ctx) {
		}
		cancel()
		wg.Wait()
		if v := f.launcher.Overlaps(); len(v) > 0 {
			t.Errorf("violations: %v", v)
		}
		if peak := f.launcher.MostRunning(); peak > cap {
			t.Errorf("peak running = %d, cap %d", peak, cap)
		}
		// Each branch's requests ran in queue order.
		pos := map[build.ID]int{}
		for i, id := range f.launcher.Launched() {
			pos[id] = i
		}
		for i := 0; i < len(reqs); i += perBranch {
			if pos[reqs[i].BuildID] > pos[reqs[i+1].BuildID] {
				t.Errorf("%s ran before the earlier request of its branch", reqs[i+1].LockKey())
			}
		}
	})
}

func TestDispatcherDiesBetweenLockAndLaunch(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		clock := buildtest.NewClock(t0)
		f := newFixture(1, clock)
		f.separate = separate
		req := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
		// The dead replica took lock and slot and never launched.
		dead := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: "dead", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(2 * time.Minute)}
		if err := f.locks.Acquire(ctx, dead, 1); err != nil {
			t.Fatal(err)
		}
		d := f.dispatcher(nil)
		// Another request for another branch waits for the slot, not forever:
		other := request("decap-ci/hello", "other", build.TriggerPush, clock.Now())
		if dec := d.Decide(ctx, other, message(t, other)); dec.Action != dispatch.Deferred {
			t.Fatalf("other branch: %v, want deferred while the dead lease holds the only slot", dec.Action)
		}
		// The message comes back after its visibility timeout: same build ID,
		// same lock owner, so it launches, exactly once.
		clock.Advance(30 * time.Second)
		if dec := d.Decide(ctx, req, message(t, req)); dec.Action != dispatch.Launched {
			t.Fatalf("redelivered: %v (%s), want launched", dec.Action, dec.Reason)
		}
		if dec := d.Decide(ctx, req, message(t, req)); dec.Action != dispatch.Launched {
			t.Fatalf("redelivered twice: %v, want launched (already)", dec.Action)
		}
		if n := len(f.launcher.Launched()); n != 1 {
			t.Errorf("started %d, want 1", n)
		}

		// A lock whose owner died and whose request is gone frees itself after
		// its lease: nothing stays stuck.
		f2 := newFixture(1, clock)
		f2.separate = separate
		stuck := build.Lease{Key: "decap-ci/hello/main", BuildID: build.NewID(clock.Now()), Owner: "dead", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(2 * time.Minute)}
		if err := f2.locks.Acquire(ctx, stuck, 1); err != nil {
			t.Fatal(err)
		}
		d2 := f2.dispatcher(nil)
		next := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
		if dec := d2.Decide(ctx, next, message(t, next)); dec.Action != dispatch.Deferred {
			t.Fatalf("within the lease: %v, want deferred", dec.Action)
		}
		clock.Advance(2*time.Minute + time.Second)
		if dec := d2.Decide(ctx, next, message(t, next)); dec.Action != dispatch.Launched {
			t.Fatalf("after the lease: %v (%s), want launched", dec.Action, dec.Reason)
		}
	})
}

func TestSlowDecisionKeepsMessageInvisible(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(0, nil)
	q := buildtest.NewQueue(time.Now, buildtest.QueueOptions{VisibilityTimeout: 300 * time.Millisecond})
	release := f.slowly()
	d := dispatch.New(dispatch.Config{VisibilityTimeout: 300 * time.Millisecond}, dispatch.Deps{Queue: q, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Now: time.Now})
	req := request("decap-ci/hello", "main", build.TriggerPush, time.Now())
	if err := q.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	msgs, _ := q.Receive(ctx, 1, time.Second)
	if len(msgs) != 1 {
		t.Fatalf("received %d", len(msgs))
	}
	done := make(chan dispatch.Decision)
	go func() { done <- d.Handle(ctx, msgs[0]) }()
	// Three visibility timeouts pass during the decision; the message must
	// not be handed to another consumer.
	if again, _ := q.Receive(ctx, 1, time.Second); len(again) != 0 {
		t.Errorf("message redelivered while its decision was still running")
	}
	close(release)
	if dec := <-done; dec.Action != dispatch.Launched {
		t.Fatalf("decision %v (%s)", dec.Action, dec.Reason)
	}
	if st, _ := q.Stats(ctx); st.Visible+st.InFlight != 0 {
		t.Errorf("queue after the decision: %+v, want empty", st)
	}
}

func TestBackoffBoundsReceives(t *testing.T) {
	t.Parallel()
	// Deferring a request for a whole day must stay well inside SQS's
	// largest redrive limit (1000 receives), or deferral would dead-letter.
	ctx := context.Background()
	clock := buildtest.NewClock(t0)
	f := newFixture(0, clock)
	f.cfg = dispatch.Config{} // production defaults
	d := f.dispatcher(nil)
	req := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
	other := build.Lease{Key: req.LockKey(), BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
	if err := f.locks.Acquire(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	m := message(t, req)
	receives := 0
	for clock.Now().Sub(t0) < 24*time.Hour {
		receives++
		m.ReceiveCount = receives
		dec := d.Decide(ctx, req, m)
		if dec.Action != dispatch.Deferred {
			t.Fatalf("receive %d: %v", receives, dec.Action)
		}
		if dec.Delay > 15*time.Minute+15*time.Minute/5 || dec.Delay <= 0 {
			t.Fatalf("delay %v out of bounds", dec.Delay)
		}
		clock.Advance(dec.Delay)
	}
	if receives > 500 {
		t.Errorf("a day of deferral took %d receives, want well under 1000", receives)
	}
	if dec := d.Decide(ctx, req, m); dec.Action != dispatch.Dropped {
		t.Errorf("after a day: %v, want dropped as expired", dec.Action)
	}
	t.Logf("a day of deferral: %d receives", receives)
}

// endingRecords ends the build (as the reaper would) the first time the
// dispatcher reads its record, i.e. between its first read and the lock.
type endingRecords struct {
	*buildtest.FakeRecords
	once sync.Once
}

func (r *endingRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	rec, err := r.FakeRecords.Get(ctx, id)
	r.once.Do(func() {
		ended := rec
		ended.Status = build.StatusSucceeded
		if err := r.FakeRecords.Save(ctx, ended); err != nil {
			panic(err)
		}
	})
	return rec, err
}

func TestBuildEndingDuringDecisionIsNotLaunchedAgain(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		clock := buildtest.NewClock(t0)
		f := newFixture(0, clock)
		f.separate = separate
		req := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
		// Launched by a replica that died before recording it: still queued.
		if err := f.records.Save(ctx, build.RecordFor(req)); err != nil {
			t.Fatal(err)
		}
		recs := &endingRecords{FakeRecords: f.records}
		d := dispatch.New(f.cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
			Idempotency: f.idem, Records: recs, Launcher: f.launcher, Now: clock.Now})
		dec := d.Decide(ctx, req, message(t, req))
		if dec.Action != dispatch.Dropped || len(f.launcher.Launched()) != 0 {
			t.Errorf("decision %v (%s), started %d; want dropped and nothing launched", dec.Action, dec.Reason, len(f.launcher.Launched()))
		}
		if leases, _ := f.locks.List(ctx); len(leases) != 0 {
			t.Errorf("lock left held: %v", leases)
		}
	})
}

type countedLocks struct {
	*buildtest.FakeLocks
	c *buildtest.Calls
}

func (l countedLocks) Acquire(ctx context.Context, lease build.Lease, cap int) error {
	l.c.Inc("locks.acquire")
	return l.FakeLocks.Acquire(ctx, lease, cap)
}

func (l countedLocks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	l.c.Inc("locks.extend")
	return l.FakeLocks.Extend(ctx, key, id, until)
}

type countedRecords struct {
	*buildtest.FakeRecords
	c *buildtest.Calls
}

func (r countedRecords) Save(ctx context.Context, rec build.Record) error {
	r.c.Inc("records.save")
	return r.FakeRecords.Save(ctx, rec)
}

type countedQueue struct {
	*buildtest.FakeQueue
	c *buildtest.Calls
}

func (q countedQueue) Delete(ctx context.Context, receipt string) error {
	q.c.Inc("queue.delete")
	return q.FakeQueue.Delete(ctx, receipt)
}

type countedLaunches struct {
	*buildtest.FakeOneWrite
	c *buildtest.Calls
}

func (l countedLaunches) Claim(ctx context.Context, lease build.Lease, cap int, rec build.Record) error {
	l.c.Inc("launches.claim")
	return l.FakeOneWrite.Claim(ctx, lease, cap, rec)
}

func (l countedLaunches) Started(ctx context.Context, key string, until time.Time, rec build.Record, receipt string) (bool, error) {
	l.c.Inc("launches.started")
	return l.FakeOneWrite.Started(ctx, key, until, rec, receipt)
}

// TestLaunchWritesAtOnce checks that a dispatcher given Launches claims
// a request and records its start in one write each, the start's write
// deleting the message, and that without it (AWS) it makes the separate
// calls; either way the build runs, holds its running lease, and its
// message is gone.
func TestLaunchWritesAtOnce(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		clock := buildtest.NewClock(t0)
		f := newFixture(0, clock)
		req := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
		if err := f.records.Save(ctx, build.RecordFor(req)); err != nil { // ingest's
			t.Fatal(err)
		}
		if err := f.queue.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
		msgs, err := f.queue.Receive(ctx, 1, 0)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Receive() = %d messages, %v", len(msgs), err)
		}
		c := &buildtest.Calls{}
		deps := dispatch.Deps{
			Queue: countedQueue{f.queue, c}, Catalog: f.catalog, Locks: countedLocks{f.locks, c}, Idempotency: f.idem,
			Records: countedRecords{f.records, c}, Launcher: f.launcher, Now: clock.Now,
		}
		want := map[string]int{"launches.claim": 1, "launches.started": 1}
		if separate {
			want = map[string]int{"locks.acquire": 1, "records.save": 2, "locks.extend": 1, "queue.delete": 1}
		} else {
			deps.Launches = countedLaunches{f.launches, c}
		}
		if dec := dispatch.New(f.cfg, deps).Handle(ctx, msgs[0]); dec.Action != dispatch.Launched || dec.Cause != dispatch.CauseStarted {
			t.Fatalf("Handle() = %v %s (%s), want launched", dec.Action, dec.Cause, dec.Reason)
		}
		if got := c.Counts(); !maps.Equal(got, want) {
			t.Errorf("writes %v, want %v", got, want)
		}
		if rec := record(t, f, req.BuildID); rec.Status != build.StatusRunning || rec.LaunchingAt.IsZero() {
			t.Errorf("record %s launching at %v, want running with its launch claim", rec.Status, rec.LaunchingAt)
		}
		if l, ok := leaseOf(t, f.locks, req.BuildID); !ok || l.ExpiresAt.Before(clock.Now().Add(req2timeout(t, f, req))) {
			t.Errorf("lease %+v (held %v), want one covering the build's timeout", l, ok)
		}
		if err := f.queue.Delete(ctx, msgs[0].Receipt); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete() after the launch error = %v, want ErrNotFound (deleted)", err)
		}
	})
}
