package buildtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Executor is an executor of builds as the services use it: the dispatcher
// launches builds (and stops one cancelled while it launched), the reaper
// watches them end, stops the ones asked to cancel, removes them and lists
// the present ones. internal/localexec and internal/kube implement it, and
// so does FakeExecutor; TestExecutor is their contract.
type Executor interface {
	Launch(ctx context.Context, job build.Job) error
	Cancel(ctx context.Context, id build.ID) error
	Remove(ctx context.Context, id build.ID) error
	Present(ctx context.Context) ([]build.ID, error)
	Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error
}

// fakeRetry is how soon FakeExecutor.Watch reports again an outcome whose
// handle failed.
const fakeRetry = 20 * time.Millisecond

// FakeExecutor is an in-memory Executor. A launched build runs until the
// test ends it (End, Finish, Vanish) or Cancel stops it; Watch reports each
// ended build until a report is handled without error, again after a
// failed one; Remove forgets a build, and a removed build is never launched
// again (as the local executor's tombstones keep it). It passes
// TestExecutor.
//
// It also keeps what tests check of invariant 3: how many builds ran at
// once (MostRunning) and every launch of a build while another build of
// its lock key ran (Overlaps). It is safe for concurrent use.
type FakeExecutor struct {
	now func() time.Time

	mu        sync.Mutex
	builds    map[build.ID]*fakeRun // present builds
	removed   map[build.ID]bool
	launched  []build.ID // in launch order, each once
	calls     int
	running   int
	perKey    map[string]int // running builds per lock key
	peak      int
	overlaps  []string
	cancelled []build.ID // in the order Cancel stopped them
	launchErr error
	removeErr error
	watchErr  error
	onLaunch  func(ctx context.Context, job build.Job) error
	changed   chan struct{} // closed on every change Watch waits for
}

type fakeRun struct {
	job       build.Job
	outcome   *build.Outcome // nil while the build runs
	reported  bool           // its outcome was handled without error
	holdsStop bool           // Cancel does not stop it (IgnoreStops)
}

// NewExecutor returns a FakeExecutor with no builds that reads time from now
// (time.Now if nil).
func NewExecutor(now func() time.Time) *FakeExecutor {
	if now == nil {
		now = time.Now
	}
	return &FakeExecutor{now: now, builds: map[build.ID]*fakeRun{}, removed: map[build.ID]bool{},
		perKey: map[string]int{}, changed: make(chan struct{})}
}

// signal wakes Watch; e.mu is held.
func (e *FakeExecutor) signal() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// Launch starts the build of job: it runs until it is ended. Launching a
// build that is present, or was removed, starts nothing and is no error.
// The hook set with OnLaunch runs first, and then the error set with
// FailLaunch is returned, if any.
func (e *FakeExecutor) Launch(ctx context.Context, job build.Job) error {
	e.mu.Lock()
	e.calls++
	hook, err := e.onLaunch, e.launchErr
	e.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, job); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	id, key := job.Request.BuildID, job.Request.LockKey()
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.builds[id]; ok || e.removed[id] {
		return nil
	}
	if e.perKey[key] > 0 {
		e.overlaps = append(e.overlaps, fmt.Sprintf("%s launched while another build of %s runs", id, key))
	}
	e.perKey[key]++
	e.running++
	e.peak = max(e.peak, e.running)
	e.builds[id] = &fakeRun{job: job}
	e.launched = append(e.launched, id)
	e.signal()
	return nil
}

// Cancel stops the running build id: it ends cancelled with exit code 143,
// as decap-entrypoint reports a stop, unless IgnoreStops made it ignore
// stops (then it runs on). build.ErrNotFound when id is not present or has
// ended.
func (e *FakeExecutor) Cancel(_ context.Context, id build.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.builds[id]
	if !ok || r.outcome != nil {
		return fmt.Errorf("cancel %s: %w", id, build.ErrNotFound)
	}
	e.cancelled = append(e.cancelled, id)
	if !r.holdsStop {
		code := 143
		e.end(id, r, build.Outcome{Status: build.StatusCancelled, ExitCode: &code, Reason: "cancelled"})
	}
	return nil
}

// Remove forgets build id, ended or not; a later Launch of it starts
// nothing. Removing a build that is not present is no error. The error set
// with FailRemove is returned instead, if any.
func (e *FakeExecutor) Remove(_ context.Context, id build.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removeErr != nil {
		return e.removeErr
	}
	r, ok := e.builds[id]
	if !ok {
		return nil
	}
	if r.outcome == nil {
		e.stopRunning(r.job)
	}
	delete(e.builds, id)
	e.removed[id] = true
	return nil
}

// Present returns the builds launched and not removed, running or ended,
// in launch order.
func (e *FakeExecutor) Present(context.Context) ([]build.ID, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []build.ID
	for _, id := range e.launched {
		if _, ok := e.builds[id]; ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Watch calls handle with the outcome of every ended build, until a call
// returns nil, again every few milliseconds after a call that failed, until
// ctx is done; then it returns nil. It returns the error set with FailWatch
// at once, if any.
func (e *FakeExecutor) Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error {
	e.mu.Lock()
	err := e.watchErr
	e.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		e.mu.Lock()
		changed := e.changed
		var due []build.Outcome
		for _, id := range e.launched {
			if r, ok := e.builds[id]; ok && r.outcome != nil && !r.reported {
				due = append(due, *r.outcome)
			}
		}
		e.mu.Unlock()
		var retry <-chan time.Time
		for _, o := range due {
			if ctx.Err() != nil {
				return nil
			}
			if err := handle(ctx, o); err != nil {
				retry = time.After(fakeRetry)
				continue
			}
			e.mu.Lock()
			if r, ok := e.builds[o.BuildID]; ok && r.outcome != nil {
				r.reported = true
			}
			e.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry:
		}
	}
}

// End ends the running build id with o, whose build ID, Pod name, team,
// project and ref are filled in from the build, and whose finish time is
// now if o has none. It returns false if id does not run.
func (e *FakeExecutor) End(id build.ID, o build.Outcome) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.builds[id]
	if !ok || r.outcome != nil {
		return false
	}
	e.end(id, r, o)
	return true
}

// end records o as r's end; e.mu is held.
func (e *FakeExecutor) end(id build.ID, r *fakeRun, o build.Outcome) {
	req := r.job.Request
	o.BuildID, o.PodName, o.Team, o.Project, o.Ref = id, id.PodName(), req.Team, req.Project, req.Ref
	if o.FinishedAt.IsZero() {
		o.FinishedAt = e.now()
	}
	r.outcome = &o
	e.stopRunning(r.job)
	e.signal()
}

// stopRunning counts r's build as no longer running; e.mu is held.
func (e *FakeExecutor) stopRunning(job build.Job) {
	key := job.Request.LockKey()
	e.running--
	if e.perKey[key]--; e.perKey[key] <= 0 {
		delete(e.perKey, key)
	}
}

// Finish ends the running build id with status and exit code, as a run
// that stored its log and artifacts ends; false if id does not run.
func (e *FakeExecutor) Finish(id build.ID, status build.Status, code int) bool {
	o := build.Outcome{Status: status, ExitCode: &code, LogKey: build.LogKey(id), ArtifactsKey: build.ArtifactsKey(id)}
	if status != build.StatusSucceeded {
		o.Reason = fmt.Sprintf("exit code %d", code)
	}
	return e.End(id, o)
}

// Vanish makes build id disappear without an outcome, as a Pod deleted
// while no reaper watched; Watch never reports it.
func (e *FakeExecutor) Vanish(id build.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.builds[id]
	if !ok {
		return
	}
	if r.outcome == nil {
		e.stopRunning(r.job)
	}
	delete(e.builds, id)
}

// IgnoreStops makes the running build id ignore Cancel, as a Pod whose
// deletion takes its grace period or a process that ignores SIGTERM.
func (e *FakeExecutor) IgnoreStops(id build.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.builds[id]; ok {
		r.holdsStop = true
	}
}

// OnLaunch makes every Launch call hook first; an error from it is
// Launch's, and nothing is launched.
func (e *FakeExecutor) OnLaunch(hook func(ctx context.Context, job build.Job) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onLaunch = hook
}

// FailLaunch makes Launch fail with err (nil: succeed again).
func (e *FakeExecutor) FailLaunch(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.launchErr = err
}

// FailRemove makes Remove fail with err (nil: succeed again).
func (e *FakeExecutor) FailRemove(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removeErr = err
}

// FailWatch makes Watch return err at once (nil: watch again).
func (e *FakeExecutor) FailWatch(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.watchErr = err
}

// Running returns the builds that run (launched, neither ended nor
// removed), in launch order.
func (e *FakeExecutor) Running() []build.ID {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []build.ID
	for _, id := range e.launched {
		if r, ok := e.builds[id]; ok && r.outcome == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// Launched returns every build that was started, in launch order, each
// once.
func (e *FakeExecutor) Launched() []build.ID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.launched)
}

// Job returns the job build id was launched with.
func (e *FakeExecutor) Job(id build.ID) (build.Job, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.builds[id]
	if !ok {
		return build.Job{}, false
	}
	return r.job, true
}

// Calls counts Launch calls, those that started nothing or failed included.
func (e *FakeExecutor) Calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

// Cancelled returns the builds Cancel was called on while they ran, in
// call order (a build stopped twice is there twice).
func (e *FakeExecutor) Cancelled() []build.ID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.cancelled)
}

// MostRunning is the most builds that ran at once.
func (e *FakeExecutor) MostRunning() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peak
}

// Overlaps describes every launch of a build while another build of its
// lock key ran: each is a breach of invariant 3.
func (e *FakeExecutor) Overlaps() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.overlaps)
}
