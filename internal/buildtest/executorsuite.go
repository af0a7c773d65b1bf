package buildtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// ExecutorEnding is how a build of the executor suite is made to end.
type ExecutorEnding int

// Endings.
const (
	// EndSucceeds: build.sh exits 0; its log and artifacts are stored.
	EndSucceeds ExecutorEnding = iota + 1
	// EndFails: build.sh exits 3.
	EndFails
	// EndTimesOut: build.sh outlives the job's timeout.
	EndTimesOut
	// EndErrors: the build cannot run, and running it again would not help
	// (no build.sh; an image name the cluster refuses): errored, no
	// infrastructure failure.
	EndErrors
	// EndUploadFails: build.sh exits 0, but its log or artifacts cannot be
	// stored: errored, build.InfraUpload.
	EndUploadFails
	// EndRunsLong: build.sh runs until it is stopped.
	EndRunsLong
)

func (e ExecutorEnding) String() string {
	switch e {
	case EndSucceeds:
		return "succeeds"
	case EndFails:
		return "fails"
	case EndTimesOut:
		return "times out"
	case EndErrors:
		return "errors"
	case EndUploadFails:
		return "upload fails"
	case EndRunsLong:
		return "runs long"
	}
	return fmt.Sprintf("ExecutorEnding(%d)", int(e))
}

// ExecutorDriver makes the builds of one executor under the suite end as
// the suite asks, doing what the executor's world would do where nothing
// does it by itself (a kubelet moving a Pod through its phases).
type ExecutorDriver interface {
	// Job returns the job of build id, made to end as ending says.
	Job(id build.ID, ending ExecutorEnding) build.Job
	// Watching returns once a Watch started on the executor sees every
	// change made from then on.
	Watching(t *testing.T)
	// Drive takes the launched build id on as its job's ending says: it
	// returns once build.sh runs (EndRunsLong), or once the build's end is
	// under way (a Pod's final status set; nothing to do for a real
	// process).
	Drive(t *testing.T, id build.ID)
	// KillFromOutside stops the running build id as something other than
	// Decap would: a signal to its process, a deletion of its Pod.
	KillFromOutside(t *testing.T, id build.ID)
	// Runs counts the runs of build id that started (processes, Pods).
	Runs(t *testing.T, id build.ID) int
}

// ExecutorFeatures says how an executor under the suite differs.
type ExecutorFeatures struct {
	// CancelLooksExternal: the outcome of a build that Cancel stopped
	// looks like a stop from outside (a deleted Pod): errored or cancelled
	// with an infrastructure cause. Record.End still records it as
	// cancelled, from the record's cancel request.
	CancelLooksExternal bool
	// NoUploadFailure: the suite cannot make uploads fail; EndUploadFails
	// is left out.
	NoUploadFailure bool
}

// ExecutorHarness is one executor under the suite: New returns a fresh
// executor with no builds and its driver. An executor that also looks for
// ends periodically (the local executor's poll of its run directory) does
// so every SuitePoll or less often under the suite, so that every end the
// suite waits for is reported as the event it is, and every report after a
// failed handle comes from a retry, not from a poll.
type ExecutorHarness struct {
	New      func(t *testing.T) (Executor, ExecutorDriver)
	Features ExecutorFeatures
}

// SuitePoll is the shortest period of an executor's periodic search for
// ended builds under the suite: longer than any test of it waits.
const SuitePoll = time.Hour

// suiteWait bounds every wait of the executor suite; it is a deadlock
// guard, never a measure of speed (real processes upload, and retry).
const suiteWait = 90 * time.Second

// TestExecutor runs the executor contract against h: every Test* function
// of the suite, as parallel subtests.
func TestExecutor(t *testing.T, h ExecutorHarness) {
	for name, test := range map[string]func(*testing.T, ExecutorHarness){
		"launch":               TestExecutorLaunch,
		"ends":                 TestExecutorEnds,
		"cancel":               TestExecutorCancel,
		"killed from outside":  TestExecutorKilledFromOutside,
		"report until handled": TestExecutorReportsUntilHandled,
		"remove":               TestExecutorRemove,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, h)
		})
	}
}

// outcomes collects what Watch reports, per build.
type outcomes struct {
	mu      sync.Mutex
	got     map[build.ID][]build.Outcome
	failFor map[build.ID]int // handle fails this many more times
	changed chan struct{}
}

// watchAll runs ex.Watch until the test ends and collects its reports.
func watchAll(t *testing.T, ex Executor, d ExecutorDriver) *outcomes {
	t.Helper()
	c := &outcomes{got: map[build.ID][]build.Outcome{}, failFor: map[build.ID]int{}, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ex.Watch(ctx, func(_ context.Context, o build.Outcome) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.got[o.BuildID] = append(c.got[o.BuildID], o)
			close(c.changed)
			c.changed = make(chan struct{})
			if c.failFor[o.BuildID] > 0 {
				c.failFor[o.BuildID]--
				return errors.New("record store unavailable")
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after its context ended, want nil", err)
			}
		case <-time.After(suiteWait):
			t.Errorf("Watch did not return within %s of its context's end", suiteWait)
		}
	})
	d.Watching(t)
	return c
}

// reports waits until id has at least n reports and returns them.
func (c *outcomes) reports(t *testing.T, id build.ID, n int) []build.Outcome {
	t.Helper()
	deadline := time.After(suiteWait)
	for {
		c.mu.Lock()
		got, changed := slices.Clone(c.got[id]), c.changed
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("build %s: %d reports of its end within %s, want %d", id, len(got), suiteWait, n)
		}
	}
}

// first waits for the first report of id's end.
func (c *outcomes) first(t *testing.T, id build.ID) build.Outcome {
	t.Helper()
	return c.reports(t, id, 1)[0]
}

// launched launches a build of ending and drives it; it returns the job.
func launched(t *testing.T, ex Executor, d ExecutorDriver, ending ExecutorEnding) build.Job {
	t.Helper()
	job := d.Job(build.NewID(time.Now()), ending)
	if err := ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch (%s): %v", ending, err)
	}
	d.Drive(t, job.Request.BuildID)
	return job
}

// recorded ends a running record of job with o as the reaper does, after
// a cancel request if asked, and returns it.
func recorded(t *testing.T, job build.Job, o build.Outcome, asked bool) build.Record {
	t.Helper()
	rec := build.RecordFor(job.Request)
	if err := rec.Start(time.Now(), job.Request.BuildID.PodName(), job.CatalogCommit); err != nil {
		t.Fatal(err)
	}
	if asked {
		if err := rec.RequestCancel(time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.End(o, time.Now()); err != nil {
		t.Fatalf("End(%+v): %v", o, err)
	}
	return rec
}

// checkNames checks what an outcome says of which build it is.
func checkNames(t *testing.T, job build.Job, o build.Outcome) {
	t.Helper()
	req := job.Request
	if o.BuildID != req.BuildID || o.LockKey() != req.LockKey() || o.FinishedAt.IsZero() {
		t.Errorf("outcome names build %s of %s finished at %v; want %s of %s with a finish time",
			o.BuildID, o.LockKey(), o.FinishedAt, req.BuildID, req.LockKey())
	}
}

// TestExecutorLaunch: Launch starts a build once however often it is
// called, and the build is present until removed.
func TestExecutorLaunch(t *testing.T, h ExecutorHarness) {
	ex, d := h.New(t)
	ctx := t.Context()
	c := watchAll(t, ex, d)
	job := d.Job(build.NewID(time.Now()), EndRunsLong)
	id := job.Request.BuildID
	for range 2 {
		if err := ex.Launch(ctx, job); err != nil {
			t.Fatalf("Launch: %v", err)
		}
	}
	d.Drive(t, id)
	if err := ex.Launch(ctx, job); err != nil {
		t.Fatalf("Launch of a running build: %v, want nil (launched)", err)
	}
	if n := d.Runs(t, id); n != 1 {
		t.Errorf("runs of a build launched three times: %d, want 1", n)
	}
	present, err := ex.Present(ctx)
	if err != nil || !slices.Equal(present, []build.ID{id}) {
		t.Errorf("Present: got %v, %v; want [%s]", present, err, id)
	}
	// Stopped, so the test leaves nothing running.
	if err := ex.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	checkNames(t, job, c.first(t, id))
}

// TestExecutorEnds: Watch reports each way a build run ends, with the
// build's own object keys, and an infrastructure cause only for what the
// build's run did not decide (an upload that failed).
func TestExecutorEnds(t *testing.T, h ExecutorHarness) {
	tests := []struct {
		ending    ExecutorEnding
		status    build.Status
		exitCode  *int // nil: not checked
		infra     build.InfraCause
		uploaded  bool
		skip      bool
		recordsAs build.Status
	}{
		{ending: EndSucceeds, status: build.StatusSucceeded, exitCode: intPtr(0), uploaded: true},
		{ending: EndFails, status: build.StatusFailed, exitCode: intPtr(3), uploaded: true},
		{ending: EndTimesOut, status: build.StatusTimedOut},
		{ending: EndErrors, status: build.StatusErrored},
		{ending: EndUploadFails, status: build.StatusErrored, infra: build.InfraUpload, skip: h.Features.NoUploadFailure},
	}
	for _, tt := range tests {
		t.Run(tt.ending.String(), func(t *testing.T) {
			if tt.skip {
				t.Skip("this executor's harness cannot make uploads fail")
			}
			t.Parallel()
			ex, d := h.New(t)
			c := watchAll(t, ex, d)
			job := launched(t, ex, d, tt.ending)
			id := job.Request.BuildID
			o := c.first(t, id)
			checkNames(t, job, o)
			if o.Status != tt.status || o.Infra != tt.infra {
				t.Errorf("outcome: %s (%s), infra %q; want %s, infra %q", o.Status, o.Reason, o.Infra, tt.status, tt.infra)
			}
			if tt.exitCode != nil && (o.ExitCode == nil || *o.ExitCode != *tt.exitCode) {
				t.Errorf("exit code: got %v, want %d", derefInt(o.ExitCode), *tt.exitCode)
			}
			if tt.uploaded && (o.LogKey != build.LogKey(id) || o.ArtifactsKey != build.ArtifactsKey(id)) {
				t.Errorf("object keys: got %q, %q; want the build's own", o.LogKey, o.ArtifactsKey)
			}
			rec := recorded(t, job, o, false)
			if rec.Status != tt.status || rec.EndedByInfra(o) != tt.infra {
				t.Errorf("record: %s (%s), infra %q; want %s, infra %q", rec.Status, rec.Reason, rec.EndedByInfra(o), tt.status, tt.infra)
			}
		})
	}
}

// TestExecutorCancel: Cancel stops a running build, and the record of a
// build whose cancel was asked for ends cancelled, never an
// infrastructure failure, however the stop looked to the executor. There
// is nothing to cancel of a build never launched.
func TestExecutorCancel(t *testing.T, h ExecutorHarness) {
	ex, d := h.New(t)
	ctx := t.Context()
	c := watchAll(t, ex, d)
	if err := ex.Cancel(ctx, build.NewID(time.Now())); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of a build never launched: %v, want ErrNotFound", err)
	}
	job := launched(t, ex, d, EndRunsLong)
	id := job.Request.BuildID
	if err := ex.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	o := c.first(t, id)
	checkNames(t, job, o)
	switch {
	case !h.Features.CancelLooksExternal && (o.Status != build.StatusCancelled || o.Infra != ""):
		t.Errorf("outcome: %s (%s), infra %q; want cancelled, no infrastructure failure", o.Status, o.Reason, o.Infra)
	case h.Features.CancelLooksExternal && o.Status != build.StatusCancelled && o.Status != build.StatusErrored:
		t.Errorf("outcome: %s (%s); want cancelled or errored", o.Status, o.Reason)
	}
	if rec := recorded(t, job, o, true); rec.Status != build.StatusCancelled || rec.EndedByInfra(o) != "" {
		t.Errorf("record of a cancel asked for: %s (%s), infra %q; want cancelled, none", rec.Status, rec.Reason, rec.EndedByInfra(o))
	}
	// Cancelling a build that ended stops nothing.
	if err := ex.Cancel(ctx, id); err != nil && !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of an ended build: %v, want nil or ErrNotFound", err)
	}
}

// TestExecutorKilledFromOutside: a build stopped by something other than
// Decap ends as an infrastructure failure, and its record errored with it.
func TestExecutorKilledFromOutside(t *testing.T, h ExecutorHarness) {
	ex, d := h.New(t)
	c := watchAll(t, ex, d)
	job := launched(t, ex, d, EndRunsLong)
	id := job.Request.BuildID
	d.KillFromOutside(t, id)
	o := c.first(t, id)
	checkNames(t, job, o)
	if o.Infra == "" {
		t.Errorf("outcome: %s (%s), no infrastructure cause; want one", o.Status, o.Reason)
	}
	if rec := recorded(t, job, o, false); rec.Status != build.StatusErrored || rec.EndedByInfra(o) == "" {
		t.Errorf("record: %s (%s), infra %q; want errored by an infrastructure failure", rec.Status, rec.Reason, rec.EndedByInfra(o))
	}
}

// TestExecutorReportsUntilHandled: an outcome whose handling failed is
// reported again.
func TestExecutorReportsUntilHandled(t *testing.T, h ExecutorHarness) {
	ex, d := h.New(t)
	c := watchAll(t, ex, d)
	job := d.Job(build.NewID(time.Now()), EndFails)
	id := job.Request.BuildID
	c.mu.Lock()
	c.failFor[id] = 2
	c.mu.Unlock()
	if err := ex.Launch(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	d.Drive(t, id)
	got := c.reports(t, id, 3)
	for _, o := range got[1:] {
		if o.Status != got[0].Status || o.Reason != got[0].Reason {
			t.Errorf("a repeated report differs: %s (%s), first %s (%s)", o.Status, o.Reason, got[0].Status, got[0].Reason)
		}
	}
}

// TestExecutorRemove: Remove deletes what is left of an ended build, once
// or again, and removing what is not there is no error.
func TestExecutorRemove(t *testing.T, h ExecutorHarness) {
	ex, d := h.New(t)
	ctx := t.Context()
	c := watchAll(t, ex, d)
	job := launched(t, ex, d, EndSucceeds)
	id := job.Request.BuildID
	c.first(t, id)
	for range 2 {
		if err := ex.Remove(ctx, id); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if present, err := ex.Present(ctx); err != nil || slices.Contains(present, id) {
		t.Errorf("Present after Remove: %v, %v; want it without %s", present, err, id)
	}
	if err := ex.Remove(ctx, build.NewID(time.Now())); err != nil {
		t.Errorf("Remove of a build never launched: %v, want nil", err)
	}
}

func intPtr(n int) *int { return &n }

func derefInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
