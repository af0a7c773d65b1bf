package reap_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestSweepCancelsStopsBuildsWhoseRecordAsksForIt: ingest never stops a
// build itself, whatever the executor; it marks the record, the reaper
// stops the build, and the build's end, whatever the executor saw of the
// stop, is recorded as cancelled.
func TestSweepCancelsStopsBuildsWhoseRecordAsksForIt(t *testing.T) {
	f := newFixture()
	ctx := t.Context()
	asked, left, gone := f.running(t, "asked"), f.running(t, "left"), f.running(t, "gone")
	for _, r := range []build.Record{asked, gone} {
		if err := r.RequestCancel(f.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	f.exec.Vanish(gone.BuildID)       // ended by itself meanwhile
	f.exec.IgnoreStops(asked.BuildID) // its Pod takes its grace period
	if err := f.reaper.SweepCancels(ctx); err != nil {
		t.Fatalf("SweepCancels: %v", err)
	}
	if got := f.exec.Cancelled(); len(got) != 1 || got[0] != asked.BuildID {
		t.Fatalf("stopped: got %v, want only %s (not %s, never asked; %s is gone already)", got, asked.BuildID, left.BuildID, gone.BuildID)
	}

	// While its Pod terminates, later sweeps leave it alone; a stop that
	// did not end it is repeated after a while.
	if err := f.reaper.SweepCancels(ctx); err != nil || len(f.exec.Cancelled()) != 1 {
		t.Fatalf("a second sweep at once: stopped %v, %v; want no second stop", f.exec.Cancelled(), err)
	}
	f.clock.Advance(time.Minute)
	if err := f.reaper.SweepCancels(ctx); err != nil || len(f.exec.Cancelled()) != 2 {
		t.Fatalf("a sweep a minute later: stopped %v, %v; want the stop repeated", f.exec.Cancelled(), err)
	}

	// The Pod went away under the delete: the executor reports errored.
	o := outcome(asked, build.StatusErrored, 137, f.clock.Now())
	o.Reason = "build pod was deleted before it ended"
	if err := f.reaper.Handle(ctx, o); err != nil {
		t.Fatal(err)
	}
	got, _ := f.records.Get(ctx, asked.BuildID)
	if got.Status != build.StatusCancelled || !strings.HasPrefix(got.Reason, "cancelled on request") {
		t.Errorf("record: got %s %q, want cancelled on request", got.Status, got.Reason)
	}
	// A build that succeeded before the stop took effect keeps its success.
	o = outcome(gone, build.StatusSucceeded, 0, f.clock.Now())
	if err := f.reaper.Handle(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.records.Get(ctx, gone.BuildID); got.Status != build.StatusSucceeded {
		t.Errorf("record of a build that succeeded first: got %s, want succeeded", got.Status)
	}
}

// TestReconcileStopsBuildsWhoseRecordEndedBeforeTheyStarted: a cancel
// that read the request as waiting wrote its final record over the running
// one a dispatcher wrote meanwhile. The build runs under a record that
// never saw it start; Reconcile stops it, and leaves alone the builds that
// ended as recorded and those still being launched.
func TestReconcileStopsBuildsWhoseRecordEndedBeforeTheyStarted(t *testing.T) {
	f := newFixture()
	ctx := t.Context()
	stray := f.running(t, "stray")
	cancelled := recordOf(t, f, stray.BuildID)
	cancelled.Status, cancelled.StartedAt, cancelled.PodName = build.StatusQueued, time.Time{}, ""
	if err := cancelled.Cancel(f.clock.Now(), "api"); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(ctx, cancelled); err != nil {
		t.Fatal(err)
	}
	ended := f.running(t, "ended")
	f.exec.Finish(ended.BuildID, build.StatusFailed, 1)
	f.exec.FailRemove(errors.New("api server unreachable")) // it stays until the next report
	if err := f.reaper.Handle(ctx, outcome(ended, build.StatusFailed, 1, f.clock.Now())); err == nil {
		t.Fatal("Handle succeeded although removal failed")
	}
	req := build.Request{V: 1, BuildID: build.NewID(f.clock.Now()), Team: "decap-ci", Project: "hello",
		Ref: "launching", RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: f.clock.Now()}
	if err := f.records.Save(ctx, build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
	f.launch(t, build.Job{Request: req})

	if err := f.reaper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.exec.Cancelled(); !slices.Equal(got, []build.ID{stray.BuildID}) {
		t.Errorf("stopped %v, want only the stray build %s", got, stray.BuildID)
	}
	if got := recordOf(t, f, stray.BuildID); got.Status != build.StatusCancelled {
		t.Errorf("stray build's record: %s, want it left cancelled", got.Status)
	}
}

func recordOf(t *testing.T, f *fixture, id build.ID) build.Record {
	t.Helper()
	r, err := f.records.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
