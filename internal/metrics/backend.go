package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/decap-ci/decap/internal/build"
)

// Backend counts the failures of the backend ports. Its methods wrap a
// port in a decorator that passes every call through unchanged and counts
// the errors that mean the backend failed; the series of a wrapped port's
// operations start at zero. Answers (build.ErrNotFound,
// ErrLocked, ErrCapReached, ErrConflict, ErrInvalid) and cancellations are
// not failures. Made by NewCountingBackend, it also tells every call.
type Backend struct {
	errors *prometheus.CounterVec
	calls  Calls
}

// Calls hears every call of a wrapped port as it returns, failed or not,
// by port (queue, locks, …, executor) and operation, named as in
// decap_backend_errors_total except a queue's Depth, which is "depth"
// here. The bench counts a service's calls so, through the very wrappers
// the services run. It must be cheap and safe for concurrent use.
type Calls interface {
	Called(port, op string)
}

// NewBackend registers decap_backend_errors_total on reg.
func NewBackend(reg prometheus.Registerer) *Backend {
	return NewCountingBackend(reg, nil)
}

// NewCountingBackend is NewBackend whose wrappers also tell calls, if not
// nil, of every call.
func NewCountingBackend(reg prometheus.Registerer, calls Calls) *Backend {
	return &Backend{calls: calls, errors: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "decap_backend_errors_total",
		Help: "Failed calls to a backend, by backend port (queue, locks, idempotency, records, blobs, gate, intake, launches, ends, executor) and operation (e.g. publish, acquire, save, launch).",
	}, []string{"backend", "op"})}
}

// known starts the series of a wrapped port at zero, so that they are
// exposed before its first failure.
func (m *Backend) known(backend string, ops ...string) {
	for _, op := range ops {
		m.errors.WithLabelValues(backend, op)
	}
}

// count tells the call to m.calls and counts err if it is a failure; it
// returns err.
func (m *Backend) count(backend, op string, err error) error {
	if m.calls != nil {
		m.calls.Called(backend, op)
	}
	return m.countError(backend, op, err)
}

// countError counts err if it is a failure, and returns it.
func (m *Backend) countError(backend, op string, err error) error {
	if failed(err) {
		m.errors.WithLabelValues(backend, op).Inc()
	}
	return err
}

func failed(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, context.Canceled),
		errors.Is(err, build.ErrNotFound), errors.Is(err, build.ErrLocked), errors.Is(err, build.ErrCapReached),
		errors.Is(err, build.ErrConflict), errors.Is(err, build.ErrInvalid):
		return false
	}
	return true
}

// Queue wraps q.
func (m *Backend) Queue(q build.Queue) build.Queue {
	m.known("queue", "publish", "receive", "delete", "change_visibility", "dead_letter", "stats")
	return &queue{q, m}
}

type queue struct {
	q build.Queue
	m *Backend
}

func (w *queue) Publish(ctx context.Context, reqs ...build.Request) error {
	return w.m.count("queue", "publish", w.q.Publish(ctx, reqs...))
}

func (w *queue) Receive(ctx context.Context, max int, wait time.Duration) ([]build.Message, error) {
	msgs, err := w.q.Receive(ctx, max, wait)
	return msgs, w.m.count("queue", "receive", err)
}

func (w *queue) Delete(ctx context.Context, receipt string) error {
	return w.m.count("queue", "delete", w.q.Delete(ctx, receipt))
}

func (w *queue) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	return w.m.count("queue", "change_visibility", w.q.ChangeVisibility(ctx, receipt, d))
}

func (w *queue) DeadLetter(ctx context.Context, msg build.Message, reason string) error {
	return w.m.count("queue", "dead_letter", w.q.DeadLetter(ctx, msg, reason))
}

func (w *queue) Stats(ctx context.Context) (build.QueueStats, error) {
	st, err := w.q.Stats(ctx)
	return st, w.m.count("queue", "stats", err)
}

// Depth is the wrapped queue's build.DepthOf: its Depth, or its Stats.
func (w *queue) Depth(ctx context.Context) (build.QueueStats, error) {
	st, err := build.DepthOf(ctx, w.q)
	if w.m.calls != nil {
		w.m.calls.Called("queue", "depth")
	}
	return st, w.m.countError("queue", "stats", err)
}

// Locks wraps l.
func (m *Backend) Locks(l build.Locks) build.Locks {
	m.known("locks", "acquire", "extend", "release", "force_release", "list")
	return &locks{l, m}
}

type locks struct {
	l build.Locks
	m *Backend
}

func (w *locks) Acquire(ctx context.Context, l build.Lease, cap int) error {
	return w.m.count("locks", "acquire", w.l.Acquire(ctx, l, cap))
}

func (w *locks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	return w.m.count("locks", "extend", w.l.Extend(ctx, key, id, until))
}

func (w *locks) Release(ctx context.Context, key string, id build.ID) (string, error) {
	waiter, err := w.l.Release(ctx, key, id)
	return waiter, w.m.count("locks", "release", err)
}

func (w *locks) Await(ctx context.Context, key, waiter string) error {
	return w.m.count("locks", "await", w.l.Await(ctx, key, waiter))
}

func (w *locks) ForceRelease(ctx context.Context, key string) error {
	return w.m.count("locks", "force_release", w.l.ForceRelease(ctx, key))
}

func (w *locks) List(ctx context.Context) ([]build.Lease, error) {
	ls, err := w.l.List(ctx)
	return ls, w.m.count("locks", "list", err)
}

// Idempotency wraps i.
func (m *Backend) Idempotency(i build.Idempotency) build.Idempotency {
	m.known("idempotency", "claim")
	return &idempotency{i, m}
}

type idempotency struct {
	i build.Idempotency
	m *Backend
}

func (w *idempotency) Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	owner, err := w.i.Claim(ctx, key, id, ttl)
	return owner, w.m.count("idempotency", "claim", err)
}

// Records wraps r.
func (m *Backend) Records(r build.Records) build.Records {
	m.known("records", "save", "get", "list_project", "running", "waiting", "unfinished", "end_waiting", "average_duration", "projects")
	return &records{r, m}
}

type records struct {
	r build.Records
	m *Backend
}

func (w *records) Save(ctx context.Context, r build.Record) error {
	return w.m.count("records", "save", w.r.Save(ctx, r))
}

func (w *records) Get(ctx context.Context, id build.ID) (build.Record, error) {
	r, err := w.r.Get(ctx, id)
	return r, w.m.count("records", "get", err)
}

func (w *records) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	rs, next, err := w.r.ListProject(ctx, team, project, limit, cursor)
	return rs, next, w.m.count("records", "list_project", err)
}

func (w *records) Running(ctx context.Context) ([]build.Record, error) {
	rs, err := w.r.Running(ctx)
	return rs, w.m.count("records", "running", err)
}

func (w *records) Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error) {
	rs, total, err := w.r.Waiting(ctx, offset, limit)
	return rs, total, w.m.count("records", "waiting", err)
}

func (w *records) Unfinished(ctx context.Context, key string) ([]build.Record, error) {
	rs, err := w.r.Unfinished(ctx, key)
	return rs, w.m.count("records", "unfinished", err)
}

func (w *records) EndWaiting(ctx context.Context, r build.Record) error {
	return w.m.count("records", "end_waiting", w.r.EndWaiting(ctx, r))
}

func (w *records) AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error) {
	d, k, err := w.r.AverageDuration(ctx, team, project, n)
	return d, k, w.m.count("records", "average_duration", err)
}

func (w *records) Projects(ctx context.Context) ([]string, error) {
	ps, err := w.r.Projects(ctx)
	return ps, w.m.count("records", "projects", err)
}

// Blobs wraps b.
func (m *Backend) Blobs(b build.Blobs) build.Blobs {
	m.known("blobs", "put", "open")
	return &blobs{b, m}
}

type blobs struct {
	b build.Blobs
	m *Backend
}

func (w *blobs) Put(ctx context.Context, key string, r io.Reader) error {
	return w.m.count("blobs", "put", w.b.Put(ctx, key, r))
}

func (w *blobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := w.b.Open(ctx, key)
	return rc, w.m.count("blobs", "open", err)
}

// Intake wraps i.
func (m *Backend) Intake(i build.Intake) build.Intake {
	m.known("intake", "enqueue", "enqueue_superseding")
	return &intake{i, m}
}

type intake struct {
	i build.Intake
	m *Backend
}

func (w *intake) Enqueue(ctx context.Context, req build.Request, claims []string, ttl time.Duration) (build.ID, error) {
	owner, err := w.i.Enqueue(ctx, req, claims, ttl)
	return owner, w.m.count("intake", "enqueue", err)
}

func (w *intake) EnqueueSuperseding(ctx context.Context, req build.Request, claims []string, ttl time.Duration, now time.Time) (build.ID, []build.ID, error) {
	owner, superseded, err := w.i.EnqueueSuperseding(ctx, req, claims, ttl, now)
	return owner, superseded, w.m.count("intake", "enqueue_superseding", err)
}

// Launches wraps l.
func (m *Backend) Launches(l build.Launches) build.Launches {
	m.known("launches", "claim", "started")
	return &launches{l, m}
}

type launches struct {
	l build.Launches
	m *Backend
}

func (w *launches) Claim(ctx context.Context, l build.Lease, cap int, rec build.Record) error {
	return w.m.count("launches", "claim", w.l.Claim(ctx, l, cap, rec))
}

func (w *launches) Started(ctx context.Context, key string, until time.Time, rec build.Record, receipt string) (bool, error) {
	deleted, err := w.l.Started(ctx, key, until, rec, receipt)
	return deleted, w.m.count("launches", "started", err)
}

// Ends wraps e.
func (m *Backend) Ends(e build.Ends) build.Ends {
	m.known("ends", "ended")
	return &ends{e, m}
}

type ends struct {
	e build.Ends
	m *Backend
}

func (w *ends) Ended(ctx context.Context, rec build.Record, key string) (bool, error) {
	released, err := w.e.Ended(ctx, rec, key)
	return released, w.m.count("ends", "ended", err)
}

// Gate wraps g.
func (m *Backend) Gate(g build.Gate) build.Gate {
	m.known("gate", "get", "set")
	return &gate{g, m}
}

type gate struct {
	g build.Gate
	m *Backend
}

func (w *gate) Get(ctx context.Context) (build.GateState, error) {
	st, err := w.g.Get(ctx)
	return st, w.m.count("gate", "get", err)
}

func (w *gate) Set(ctx context.Context, g build.GateState) error {
	return w.m.count("gate", "set", w.g.Set(ctx, g))
}

// Launcher starts builds (the executor, as the dispatcher uses it).
type Launcher interface {
	Launch(ctx context.Context, job build.Job) error
}

// Launcher wraps l.
func (m *Backend) Launcher(l Launcher) Launcher {
	m.known("executor", "launch")
	return &launcher{l, m}
}

type launcher struct {
	l Launcher
	m *Backend
}

func (w *launcher) Launch(ctx context.Context, job build.Job) error {
	return w.m.count("executor", "launch", w.l.Launch(ctx, job))
}

// Reaped is the executor as the reaper uses it: it watches builds end,
// stops builds asked to cancel, removes ended builds and lists the present
// ones.
type Reaped interface {
	Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error
	Cancel(ctx context.Context, id build.ID) error
	Remove(ctx context.Context, id build.ID) error
	Present(ctx context.Context) ([]build.ID, error)
}

// Reaped wraps r, counting the failures of its cancel, remove and present
// calls (Watch logs its own).
func (m *Backend) Reaped(r Reaped) Reaped {
	m.known("executor", "cancel", "remove", "present")
	return &reaped{r, m}
}

type reaped struct {
	r Reaped
	m *Backend
}

func (w *reaped) Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error {
	return w.r.Watch(ctx, handle)
}

func (w *reaped) Cancel(ctx context.Context, id build.ID) error {
	return w.m.count("executor", "cancel", w.r.Cancel(ctx, id))
}

func (w *reaped) Remove(ctx context.Context, id build.ID) error {
	return w.m.count("executor", "remove", w.r.Remove(ctx, id))
}

func (w *reaped) Present(ctx context.Context) ([]build.ID, error) {
	ids, err := w.r.Present(ctx)
	return ids, w.m.count("executor", "present", err)
}
