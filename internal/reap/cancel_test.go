package reap_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// fakeCanceller records the builds it was asked to stop.
type fakeCanceller struct {
	mu        sync.Mutex
	cancelled []build.ID
	gone      map[build.ID]bool
}

func (c *fakeCanceller) Cancel(_ context.Context, id build.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone[id] {
		return build.ErrNotFound
	}
	c.cancelled = append(c.cancelled, id)
	return nil
}

// TestSweepCancelsStopsBuildsWhoseRecordAsksForIt: ingest on Kubernetes
// may not delete Pods, so it marks the record; the reaper stops the build,
// and the build's end, whatever the executor saw of the stop, is recorded
// as cancelled.
func TestSweepCancelsStopsBuildsWhoseRecordAsksForIt(t *testing.T) {
	f := newFixture()
	ctx := t.Context()
	asked, left, gone := f.running(t, "asked"), f.running(t, "left"), f.running(t, "gone")
	for _, r := range []build.Record{asked, gone} {
		r.CancelRequestedAt = f.clock.Now()
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	c := &fakeCanceller{gone: map[build.ID]bool{gone.BuildID: true}}
	if err := f.reaper.SweepCancels(ctx, c); err != nil {
		t.Fatalf("SweepCancels: %v", err)
	}
	if len(c.cancelled) != 1 || c.cancelled[0] != asked.BuildID {
		t.Fatalf("stopped: got %v, want only %s (not %s, never asked; %s is gone already)", c.cancelled, asked.BuildID, left.BuildID, gone.BuildID)
	}

	// While its Pod terminates, later sweeps leave it alone; a stop that
	// did not end it is repeated after a while.
	if err := f.reaper.SweepCancels(ctx, c); err != nil || len(c.cancelled) != 1 {
		t.Fatalf("a second sweep at once: stopped %v, %v; want no second stop", c.cancelled, err)
	}
	f.clock.Advance(time.Minute)
	if err := f.reaper.SweepCancels(ctx, c); err != nil || len(c.cancelled) != 2 {
		t.Fatalf("a sweep a minute later: stopped %v, %v; want the stop repeated", c.cancelled, err)
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
