package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
	"github.com/decap-ci/decap/internal/sqlite"
)

func TestRegistryServesRuntimeMetrics(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	metrics.NewIngest(reg)
	w := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d, want 200", w.Code)
	}
	for _, want := range []string{"go_goroutines ", "process_cpu_seconds_total ", "decap_webhooks_total{", "# HELP decap_publish_seconds "} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Two services' registries in one process do not collide: nothing is
// registered globally.
func TestRegistriesAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := metrics.NewRegistry(), metrics.NewRegistry()
	ma, mb := metrics.NewReap(a), metrics.NewReap(b)
	ma.Ended(build.StatusSucceeded, time.Minute, time.Second)
	mb.Ended(build.StatusFailed, time.Minute, time.Second)
	if got := metricstest.Value(t, a, "decap_builds_finished_total", "status", "failed"); got != 0 {
		t.Errorf("registry a counted %v failed builds, want 0", got)
	}
	if got := metricstest.Value(t, b, "decap_builds_finished_total", "status", "failed"); got != 1 {
		t.Errorf("registry b counted %v failed builds, want 1", got)
	}
}

// failingQueue fails every call with err.
type failingQueue struct{ err error }

func (q failingQueue) Publish(context.Context, ...build.Request) error { return q.err }
func (q failingQueue) Receive(context.Context, int, time.Duration) ([]build.Message, error) {
	return nil, q.err
}
func (q failingQueue) Delete(context.Context, string) error                          { return q.err }
func (q failingQueue) ChangeVisibility(context.Context, string, time.Duration) error { return q.err }
func (q failingQueue) DeadLetter(context.Context, build.Message, string) error       { return q.err }
func (q failingQueue) Stats(context.Context) (build.QueueStats, error) {
	return build.QueueStats{}, q.err
}

func TestBackendCountsFailuresNotAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want float64
	}{
		{"success", nil, 0},
		{"unavailable", fmt.Errorf("sqs: %w", build.ErrUnavailable), 1},
		{"any other error", errors.New("disk full"), 1},
		{"timeout", context.DeadlineExceeded, 1},
		{"cancelled", fmt.Errorf("receive: %w", context.Canceled), 0},
		{"not found", fmt.Errorf("receipt: %w", build.ErrNotFound), 0},
		{"conflict", build.ErrConflict, 0},
		{"locked", build.ErrLocked, 0},
		{"cap", build.ErrCapReached, 0},
		{"invalid", build.ErrInvalid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			q := metrics.NewBackend(reg).Queue(failingQueue{tt.err})
			err := q.Publish(context.Background())
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Publish: got %v, want the wrapped port's %v unchanged", err, tt.err)
			}
			if got := metricstest.Value(t, reg, "decap_backend_errors_total", "backend", "queue", "op", "publish"); got != tt.want {
				t.Errorf("decap_backend_errors_total{backend=queue,op=publish} = %v, want %v", got, tt.want)
			}
		})
	}
}

// The decorators pass every call through: the wrapped fakes still pass
// behaviour the services rely on, and only failures are counted.
func TestBackendDecoratorsPassThrough(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m := metrics.NewBackend(reg)
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	q := m.Queue(buildtest.NewQueue(clock.Now, buildtest.QueueOptions{}))
	locks := m.Locks(buildtest.NewLocks(clock.Now))
	recs := m.Records(buildtest.NewRecords())
	req := build.Request{V: 1, BuildID: build.NewID(clock.Now()), Team: "decap-ci", Project: "hello", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: clock.Now()}
	if err := q.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Stats(ctx); err != nil || st.Visible != 1 {
		t.Fatalf("Stats after a publish = %+v, %v; want one visible", st, err)
	}
	l := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: "t", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	if err := locks.Acquire(ctx, l, 1); err != nil {
		t.Fatal(err)
	}
	other := l
	other.BuildID, other.Key = build.NewID(clock.Now()), "decap-ci/hello/other"
	if err := locks.Acquire(ctx, other, 1); !errors.Is(err, build.ErrCapReached) {
		t.Fatalf("Acquire past the cap: got %v, want ErrCapReached", err)
	}
	if _, err := recs.Get(ctx, req.BuildID); !errors.Is(err, build.ErrNotFound) {
		t.Fatalf("Get of no record: got %v, want ErrNotFound", err)
	}
	// The wrapped ports' series exist from the start, all at zero.
	if n, err := testutil.GatherAndCount(reg, "decap_backend_errors_total"); err != nil || n != 6+5+9 {
		t.Errorf("decap_backend_errors_total has %d series (%v), want 20: one per operation of queue, locks and records", n, err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %v after calls that all answered, want 0", f.GetName(), m.GetLabel(), v)
			}
		}
	}
}

type failingLocks struct {
	buildtest.Locks
	mu   sync.Mutex
	fail bool
}

func (l *failingLocks) List(ctx context.Context) ([]build.Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return nil, errors.New("dynamodb unreachable")
	}
	return l.Locks.List(ctx)
}

func (l *failingLocks) setFail(v bool) {
	l.mu.Lock()
	l.fail = v
	l.mu.Unlock()
}

func TestDispatchSamplesQueueAndRunningBuilds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	clock := buildtest.NewClock(start)
	queue := buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
	locks := &failingLocks{Locks: buildtest.NewLocks(clock.Now)}
	for i := range 3 {
		req := build.Request{V: 1, BuildID: build.NewID(clock.Now()), Team: "decap-ci", Project: "hello", Ref: fmt.Sprintf("b%d", i),
			RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: clock.Now()}
		if err := queue.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := queue.Receive(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		l := build.Lease{Key: fmt.Sprintf("decap-ci/hello/r%d", i), BuildID: build.NewID(clock.Now()), Owner: "t", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
		if err := locks.Acquire(ctx, l, 0); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(20 * time.Second) // within the visibility timeout

	reg := prometheus.NewRegistry()
	m := metrics.NewDispatch(reg, 5)
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Sample(ctx, queue, locks, 10*time.Millisecond, log)
	}()
	want := map[string]float64{
		"decap_queue_visible_messages":     2,
		"decap_queue_inflight_messages":    1,
		"decap_queue_dead_letter_messages": 0,
		"decap_queue_oldest_age_seconds":   20,
		"decap_running_builds":             2,
		"decap_running_builds_cap":         5,
	}
	eventually(t, func() bool {
		for name, v := range want {
			if metricstest.Value(t, reg, name) != v {
				return false
			}
		}
		return true
	}, func() string { return dump(t, reg) })

	// A failed read keeps the last value, is logged once, and the gauges
	// follow again once the backend answers.
	locks.setFail(true)
	if _, err := locks.Locks.Release(ctx, "decap-ci/hello/r0", mustList(t, locks.Locks)[0].BuildID); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), "keeping the last values") == 1
	}, func() string { return logs.String() })
	if got := metricstest.Value(t, reg, "decap_running_builds"); got != 2 {
		t.Errorf("decap_running_builds while List fails = %v, want the last value 2", got)
	}
	time.Sleep(50 * time.Millisecond)
	logMu.Lock()
	if n := strings.Count(logs.String(), "keeping the last values"); n != 1 {
		t.Errorf("the failure was logged %d times, want once", n)
	}
	logMu.Unlock()
	locks.setFail(false)
	eventually(t, func() bool { return metricstest.Value(t, reg, "decap_running_builds") == 1 }, func() string { return dump(t, reg) })
	cancel()
	<-done
}

func mustList(t *testing.T, l buildtest.Locks) []build.Lease {
	t.Helper()
	ls, err := l.List(context.Background())
	if err != nil || len(ls) == 0 {
		t.Fatalf("List = %v, %v", ls, err)
	}
	return ls
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func eventually(t *testing.T, cond func() bool, show func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in time:\n%s", show())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dump(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	w := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(w.Body)
	return string(b)
}

func TestUnlockedBuildsCounted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.NewDispatch(reg, 2)
	m.Decided(dispatch.Decision{Action: dispatch.Launched, Cause: dispatch.CauseStarted, Unlocked: true})
	m.Decided(dispatch.Decision{Action: dispatch.Launched, Cause: dispatch.CauseStarted})
	if got := metricstest.Value(t, reg, "decap_builds_unlocked_total"); got != 1 {
		t.Errorf("decap_builds_unlocked_total = %v, want 1", got)
	}
}

// depthQueue is a queue whose dead-letter count costs a call of its own,
// as on SQS: it counts the calls of each kind.
type depthQueue struct {
	build.Queue  // nil: Sample calls only Stats and Depth
	stats, depth atomic.Int64
	dead         int
}

func (q *depthQueue) Stats(context.Context) (build.QueueStats, error) {
	q.stats.Add(1)
	return build.QueueStats{Visible: 7, DeadLettered: q.dead}, nil
}

func (q *depthQueue) Depth(context.Context) (build.QueueStats, error) {
	q.depth.Add(1)
	return build.QueueStats{Visible: 7, DeadLettered: build.NotCounted}, nil
}

// TestDispatchSamplesDeadLettersLessOften: where the queue can leave its
// dead-letter queue out (build.Depther), Sample reads it once every
// DeadLetterEvery samples, and the gauge keeps the last count in between;
// the metrics' queue wrapper keeps a queue a Depther.
func TestDispatchSamplesDeadLettersLessOften(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	q := &depthQueue{dead: 3}
	reg := prometheus.NewRegistry()
	wrapped := metrics.NewBackend(reg).Queue(q)
	if _, ok := wrapped.(build.Depther); !ok {
		t.Fatal("the metrics' queue wrapper is no build.Depther")
	}
	m := metrics.NewDispatch(reg, 5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Sample(ctx, wrapped, buildtest.NewLocks(time.Now), 5*time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for q.stats.Load()+q.depth.Load() < 3*metrics.DeadLetterEvery && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	stats, depth := q.stats.Load(), q.depth.Load()
	if total := stats + depth; total < 3*metrics.DeadLetterEvery || stats > (total+metrics.DeadLetterEvery-1)/metrics.DeadLetterEvery {
		t.Errorf("%d samples read the dead-letter queue %d times, want once every %d", total, stats, metrics.DeadLetterEvery)
	}
	if got := metricstest.Value(t, reg, "decap_queue_dead_letter_messages"); got != 3 {
		t.Errorf("decap_queue_dead_letter_messages = %v, want the last count, 3", got)
	}
}

// callLog is a metrics.Calls that keeps what it hears.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (c *callLog) Called(port, op string) {
	c.mu.Lock()
	c.calls = append(c.calls, port+"."+op)
	c.mu.Unlock()
}

// TestCountingBackendTellsEveryCall: the wrappers of NewCountingBackend
// tell every call, failed or answered, by port and operation (a queue's
// Depth as depth), and still count only the failures.
func TestCountingBackendTellsEveryCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	heard := &callLog{}
	m := metrics.NewCountingBackend(reg, heard)
	q := m.Queue(failingQueue{errors.New("disk full")})
	_ = q.Publish(ctx)
	_, _ = q.Receive(ctx, 1, 0)
	_, _ = build.DepthOf(ctx, q)
	clock := buildtest.NewClock(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC))
	locks := m.Locks(buildtest.NewLocks(clock.Now))
	if _, err := locks.Release(ctx, "decap-ci/hello/main", build.NewID(clock.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Records(buildtest.NewRecords()).Get(ctx, build.NewID(clock.Now())); !errors.Is(err, build.ErrNotFound) {
		t.Fatalf("Get of no record: got %v, want build.ErrNotFound", err)
	}
	ex := buildtest.NewExecutor(clock.Now)
	ex.FailLaunch(errors.New("api server down"))
	if err := m.Launcher(ex).Launch(ctx, build.Job{}); err == nil {
		t.Fatal("Launch on a failing executor: got no error")
	}
	want := []string{"queue.publish", "queue.receive", "queue.depth", "locks.release", "records.get", "executor.launch"}
	if diff := cmp.Diff(want, heard.calls); diff != "" {
		t.Errorf("calls heard (-want +got):\n%s", diff)
	}
	for _, op := range []string{"publish", "receive", "stats"} {
		if got := metricstest.Value(t, reg, "decap_backend_errors_total", "backend", "queue", "op", op); got != 1 {
			t.Errorf("decap_backend_errors_total{backend=queue,op=%s} = %v, want 1", op, got)
		}
	}
	if got := metricstest.Value(t, reg, "decap_backend_errors_total", "backend", "records", "op", "get"); got != 0 {
		t.Errorf("decap_backend_errors_total{backend=records,op=get} = %v, want 0: not found is an answer", got)
	}
}

// TestStoreWritesReadAtScrape: the embedded store's write counts are read
// from the store at each scrape.
func TestStoreWritesReadAtScrape(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var st sqlite.WriteStats
	metrics.NewStoreWrites(reg, func() sqlite.WriteStats { return st })
	st = sqlite.WriteStats{Transactions: 3, Writes: 7, LockHeld: 1500 * time.Millisecond, LockWait: 250 * time.Millisecond}
	for name, want := range map[string]float64{
		"decap_sqlite_write_transactions_total":      3,
		"decap_sqlite_writes_total":                  7,
		"decap_sqlite_write_lock_held_seconds_total": 1.5,
		"decap_sqlite_write_lock_wait_seconds_total": 0.25,
	} {
		if got := metricstest.Value(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
