package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

// testGate is the fake gate, counting reads, that fails reads while fail
// is set.
type testGate struct {
	*buildtest.FakeGate
	fail  atomic.Bool
	reads atomic.Int64
}

func (g *testGate) Get(ctx context.Context) (build.GateState, error) {
	g.reads.Add(1)
	if g.fail.Load() {
		return build.GateState{}, errors.New("gate store down")
	}
	return g.FakeGate.Get(ctx)
}

func (g *testGate) set(t *testing.T, paused bool) {
	t.Helper()
	st := build.GateState{Paused: paused, By: "ops", Since: time.Now()}
	if paused {
		st.Reason = "maintenance"
	}
	if err := g.Set(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// runGated runs one dispatcher on f behind gate until ctx ends.
func runGated(ctx context.Context, t *testing.T, f *fixture, gate dispatch.Gate, logs *logBuffer) *sync.WaitGroup {
	cfg := f.cfg
	cfg.WaitTime = 100 * time.Millisecond
	cfg.GateInterval = 50 * time.Millisecond
	d := dispatch.New(cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Now: time.Now})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	return &wg
}

// publish publishes n requests, each for its own branch named after prefix.
func publish(ctx context.Context, t *testing.T, f *fixture, prefix string, n int) []build.Request {
	t.Helper()
	var reqs []build.Request
	now := time.Now()
	for i := range n {
		reqs = append(reqs, request("decap-ci/hello", fmt.Sprintf("%s-%d", prefix, i), build.TriggerPush, now.Add(time.Duration(i)*time.Millisecond)))
	}
	if err := f.queue.Publish(ctx, reqs...); err != nil {
		t.Fatal(err)
	}
	return reqs
}

// assertNothingTaken waits a while, then checks that no build started
// beyond the before already started, and that n requests are still visible
// on the queue: not even received.
func assertNothingTaken(ctx context.Context, t *testing.T, f *fixture, before, n int) {
	t.Helper()
	time.Sleep(400 * time.Millisecond)
	if got := f.launcher.Launched(); len(got) != before {
		t.Fatalf("started %v while the gate is paused, want only the %d started before", got, before)
	}
	if st, err := f.queue.Stats(ctx); err != nil || st.Visible != n || st.InFlight != 0 {
		t.Fatalf("queue while paused = %+v, %v; want %d visible, none in flight", st, err, n)
	}
}

func TestPausedGateHoldsRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(0, nil)
	gate := &testGate{FakeGate: buildtest.NewGate()}
	gate.set(t, true)
	logs := &logBuffer{}
	wg := runGated(ctx, t, f, gate, logs)
	reqs := publish(ctx, t, f, "first", 3)
	assertNothingTaken(ctx, t, f, 0, len(reqs))
	// A paused dispatcher reads the gate once per interval, not in a loop.
	if n := gate.reads.Load(); n > 15 {
		t.Errorf("%d gate reads in 400ms at a 50ms interval", n)
	}

	gate.set(t, false)
	waitFor(t, "every build after resuming", func() bool { return len(f.launcher.Launched()) == len(reqs) })

	// Paused again: requests published now wait again.
	gate.set(t, true)
	waitFor(t, "the dispatcher to see the pause", func() bool { return logs.count("dispatch paused") == 2 })
	more := publish(ctx, t, f, "second", 2)
	assertNothingTaken(ctx, t, f, len(reqs), len(more))
	gate.set(t, false)
	waitFor(t, "the later builds after resuming", func() bool { return len(f.launcher.Launched()) == len(reqs)+len(more) })
	cancel()
	wg.Wait()
	if p, r := logs.count("dispatch paused"), logs.count("dispatch resumed"); p != 2 || r != 2 {
		t.Errorf("logged %d pauses and %d resumes, want 2 each (once per change):\n%s", p, r, logs.b.String())
	}
}

func TestGateReadErrorKeepsLastState(t *testing.T) {
	t.Parallel()
	t.Run("paused stays paused", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := newFixture(0, nil)
		gate := &testGate{FakeGate: buildtest.NewGate()}
		gate.set(t, true)
		logs := &logBuffer{}
		wg := runGated(ctx, t, f, gate, logs)
		waitFor(t, "the pause", func() bool { return logs.count("dispatch paused") == 1 })
		// The store fails and, unseen, says open: the dispatcher stays paused.
		gate.fail.Store(true)
		gate.set(t, false)
		reqs := publish(ctx, t, f, "b", 2)
		assertNothingTaken(ctx, t, f, 0, len(reqs))
		gate.fail.Store(false)
		waitFor(t, "every build once the gate reads again", func() bool { return len(f.launcher.Launched()) == len(reqs) })
		cancel()
		wg.Wait()
		if n := logs.count("read dispatch gate"); n != 1 {
			t.Errorf("logged %d failed reads, want 1 per run of failures:\n%s", n, logs.b.String())
		}
	})
	t.Run("starts open", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := newFixture(0, nil)
		gate := &testGate{FakeGate: buildtest.NewGate()}
		gate.set(t, true)
		gate.fail.Store(true)
		wg := runGated(ctx, t, f, gate, &logBuffer{})
		reqs := publish(ctx, t, f, "b", 2)
		waitFor(t, "every build", func() bool { return len(f.launcher.Launched()) == len(reqs) })
		cancel()
		wg.Wait()
	})
}

// TestIdleDispatcherReadsGateRarely checks that an open gate is read about
// once per long poll, not once per loop.
func TestIdleDispatcherReadsGateRarely(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(0, nil)
	gate := &testGate{FakeGate: buildtest.NewGate()}
	cfg := f.cfg
	cfg.WaitTime = 100 * time.Millisecond
	cfg.GateInterval = time.Minute
	d := dispatch.New(cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate, Now: time.Now})
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	time.Sleep(500 * time.Millisecond) // five long polls, well within one gate interval
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := gate.reads.Load(); n != 1 {
		t.Errorf("%d gate reads in one gate interval, want 1", n)
	}
}

// TestBusyDispatcherReadsGateOncePerInterval: receives that return at once
// (a queue with work) do not each read the gate again: one read per gate
// interval (docs/BENCHMARKS.md, tuning 7).
func TestBusyDispatcherReadsGateOncePerInterval(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(0, nil)
	gate := &testGate{FakeGate: buildtest.NewGate()}
	cfg := f.cfg
	cfg.GateInterval, cfg.BatchSize = time.Hour, 2
	reqs := publish(ctx, t, f, "busy", 12) // six batches at least
	d := dispatch.New(cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate, Now: time.Now})
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "every build", func() bool { return len(f.launcher.Launched()) == len(reqs) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := gate.reads.Load(); n != 1 {
		t.Errorf("%d gate reads for %d requests within one gate interval, want 1", n, len(reqs))
	}
}

func TestPausedDispatcherStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(0, nil)
	gate := buildtest.NewGate()
	if err := gate.Set(ctx, build.GateState{Paused: true}); err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(f.cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate, Now: time.Now})
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a paused Run did not return after ctx ended")
	}
}

func TestPauseDuringLongPollReturnsMessages(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(0, nil)
	gate := &testGate{FakeGate: buildtest.NewGate()}
	cfg := f.cfg
	cfg.WaitTime, cfg.GateInterval = 10*time.Second, time.Hour
	d := dispatch.New(cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate, Now: time.Now})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// The dispatcher read the open gate and now waits in a long poll.
	waitFor(t, "the first gate read", func() bool { return gate.reads.Load() >= 1 })
	time.Sleep(50 * time.Millisecond)
	gate.set(t, true)
	time.Sleep(200 * time.Millisecond) // the poll waits for the request
	reqs := publish(ctx, t, f, "late", 1)
	waitFor(t, "the gate to be read again after the poll", func() bool { return gate.reads.Load() >= 2 })
	time.Sleep(100 * time.Millisecond)
	if n := len(f.launcher.Launched()); n != 0 {
		t.Fatalf("%d builds launched after the pause", n)
	}
	if st, _ := f.queue.Stats(ctx); st.Visible != len(reqs) {
		t.Errorf("queue after the paused poll: %+v, want the request visible again", st)
	}
	cancel()
	<-done
}
