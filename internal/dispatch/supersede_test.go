package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/supersede"
)

// accept records req as ingest does and supersedes for it; it returns the
// stored record.
func accept(t *testing.T, recs *buildtest.FakeRecords, req build.Request, p build.SupersedePolicy) build.Record {
	t.Helper()
	if err := recs.Save(t.Context(), build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
	rec, err := recs.Get(t.Context(), req.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := supersede.Older(t.Context(), recs, rec, p, req.RequestedAt); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestSupersededRequestNeverRuns receives the message of a request that a
// newer one superseded while it waited: it is dropped as superseded and
// nothing is launched.
func TestSupersededRequestNeverRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(0, buildtest.NewClock(t0))
	old := request("decap-ci/hello", "dev", build.TriggerPush, t0)
	accept(t, f.records, old, build.SupersedePolicy{Queued: true})
	newer := request("decap-ci/hello", "dev", build.TriggerPush, t0.Add(time.Second))
	accept(t, f.records, newer, build.SupersedePolicy{Queued: true})

	dec := f.dispatcher(nil).Decide(t.Context(), old, message(t, old))
	if dec.Action != dispatch.Dropped || dec.Cause != dispatch.CauseSuperseded {
		t.Errorf("Decide() = %s/%s (%s), want dropped/superseded", dec.Action, dec.Cause, dec.Reason)
	}
	if n := f.launcher.Calls(); n != 0 {
		t.Errorf("%d launches, want none", n)
	}
	if rec := record(t, f, old.BuildID); rec.Status != build.StatusSuperseded || rec.SupersededBy != newer.BuildID {
		t.Errorf("record = %s by %q, want superseded by %s", rec.Status, rec.SupersededBy, newer.BuildID)
	}
}

// racingRecords supersedes a request for a newer one right before the
// dispatcher's launch claim is written: ingest wins the race.
type racingRecords struct {
	*buildtest.FakeRecords
	t     *testing.T
	newer build.Request
}

func (r racingRecords) Save(ctx context.Context, rec build.Record) error {
	if !rec.LaunchingAt.IsZero() && rec.Waiting() {
		if err := r.FakeRecords.Save(ctx, build.RecordFor(r.newer)); err != nil {
			r.t.Error(err)
		}
		stored, err := r.Get(ctx, r.newer.BuildID)
		if err != nil {
			r.t.Error(err)
		}
		if _, err := supersede.Older(ctx, r.FakeRecords, stored, build.SupersedePolicy{Queued: true}, r.newer.RequestedAt); err != nil {
			r.t.Error(err)
		}
	}
	return r.FakeRecords.Save(ctx, rec)
}

// TestSupersedeBeforeTheClaim supersedes a request after the dispatcher
// read it under the lock and before it claimed it for the launch: the
// claim is refused, the lock freed, and nothing launched.
func TestSupersedeBeforeTheClaim(t *testing.T) {
	t.Parallel()
	f := newFixture(0, buildtest.NewClock(t0))
	old := request("decap-ci/hello", "dev", build.TriggerPush, t0)
	accept(t, f.records, old, build.SupersedePolicy{Queued: true})
	newer := request("decap-ci/hello", "dev", build.TriggerPush, t0.Add(time.Second))
	d := dispatch.New(f.cfg, dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem,
		Records: racingRecords{f.records, t, newer}, Launcher: f.launcher, Now: f.clock.Now,
	})
	dec := d.Decide(t.Context(), old, message(t, old))
	if dec.Action != dispatch.Dropped || dec.Cause != dispatch.CauseSuperseded {
		t.Errorf("Decide() = %s/%s (%s), want dropped/superseded", dec.Action, dec.Cause, dec.Reason)
	}
	if n := f.launcher.Calls(); n != 0 {
		t.Errorf("%d launches, want none: the build would run under a superseded record", n)
	}
	if leases, _ := f.locks.List(t.Context()); len(leases) != 0 {
		t.Errorf("locks held after the drop: %+v", leases)
	}
}

// TestNewerRequestWhileLaunching accepts a newer request while the
// dispatcher launches an older one: ingest finds the older one being
// launched and leaves it; with supersede.running the dispatcher asks its
// build to stop as soon as it is recorded running, without it the build
// runs on.
func TestNewerRequestWhileLaunching(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{true, false} {
		f := newFixture(0, buildtest.NewClock(t0))
		f.catalog.Set("decap-ci/sup", `{"buildImage":"x","supersede":{"running":`+map[bool]string{true: "true", false: "false"}[running]+`}}`)
		old := request("decap-ci/sup", "dev", build.TriggerPush, t0)
		accept(t, f.records, old, build.SupersedePolicy{Queued: true, Running: running})
		newer := request("decap-ci/sup", "dev", build.TriggerPush, t0.Add(time.Second))
		f.launcher.OnLaunch(func(ctx context.Context, job build.Job) error {
			accept(t, f.records, newer, build.SupersedePolicy{Queued: true, Running: running})
			return nil
		})
		dec := f.dispatcher(nil).Decide(t.Context(), old, message(t, old))
		if dec.Action != dispatch.Launched || dec.Cause != dispatch.CauseStarted {
			t.Fatalf("running %t: Decide() = %s/%s (%s), want launched/started", running, dec.Action, dec.Cause, dec.Reason)
		}
		rec := record(t, f, old.BuildID)
		switch {
		case running && (rec.CancelRequestedAt.IsZero() || rec.SupersededBy != newer.BuildID || dec.SupersededRunning != 1):
			t.Errorf("running true: record %s, stop asked %v by %q, decision counts %d; want a stop for %s", rec.Status, rec.CancelRequestedAt, rec.SupersededBy, dec.SupersededRunning, newer.BuildID)
		case !running && (!rec.CancelRequestedAt.IsZero() || rec.SupersededBy != ""):
			t.Errorf("running false: record asks a stop (%v, %q), want the build to run on", rec.CancelRequestedAt, rec.SupersededBy)
		case rec.Status != build.StatusRunning:
			t.Errorf("running %t: record %s, want running", running, rec.Status)
		}
		if got := record(t, f, newer.BuildID); got.Status != build.StatusQueued {
			t.Errorf("running %t: newer request %s, want queued", running, got.Status)
		}
	}
}

// TestOtherProducerSupersedes receives requests of another producer, which
// have no record until the dispatcher makes one: a newer one supersedes
// the older waiting requests of its key (and with supersede.running stops
// the running build), and one older than a waiting request is superseded
// on arrival and never launched.
func TestOtherProducerSupersedes(t *testing.T) {
	t.Parallel()
	f := newFixture(0, buildtest.NewClock(t0))
	f.catalog.Set("decap-ci/sup", `{"buildImage":"x","supersede":{"running":true}}`)
	p := build.SupersedePolicy{Queued: true, Running: true}
	running := request("decap-ci/sup", "dev", build.TriggerPush, t0)
	rec := accept(t, f.records, running, p)
	if err := rec.Start(t0, running.BuildID.PodName(), "c0ffee"); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	lease := build.Lease{Key: running.LockKey(), BuildID: running.BuildID, Owner: "test", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := f.locks.Acquire(t.Context(), lease, 0); err != nil {
		t.Fatal(err)
	}
	waiting := request("decap-ci/sup", "dev", build.TriggerPush, t0.Add(time.Second))
	accept(t, f.records, waiting, p)

	other := request("decap-ci/sup", "dev", build.TriggerAPI, t0.Add(2*time.Second))
	other.BuildID, other.DeliveryID = "", "" // as another producer may send it
	m := message(t, other)
	m.ID = "other-1"
	dec := f.dispatcher(nil).Decide(t.Context(), other, m)
	if dec.Action != dispatch.Deferred || dec.Cause != dispatch.CauseLocked {
		t.Errorf("Decide() = %s/%s (%s), want deferred/locked behind the running build", dec.Action, dec.Cause, dec.Reason)
	}
	if dec.SupersededWaiting != 1 || dec.SupersededRunning != 0 {
		// The running build was asked to stop by the waiting request already.
		t.Errorf("decision counts %d waiting, %d running superseded; want 1, 0", dec.SupersededWaiting, dec.SupersededRunning)
	}
	if got := record(t, f, waiting.BuildID); got.Status != build.StatusSuperseded || got.SupersededBy != dec.BuildID {
		t.Errorf("waiting request %s by %q, want superseded by the other producer's %s", got.Status, got.SupersededBy, dec.BuildID)
	}
	if got := record(t, f, running.BuildID); got.CancelRequestedAt.IsZero() {
		t.Errorf("running build not asked to stop")
	}

	late := request("decap-ci/sup", "dev", build.TriggerAPI, t0.Add(time.Second/2))
	late.BuildID, late.DeliveryID = "", ""
	m = message(t, late)
	m.ID = "other-2"
	dec2 := f.dispatcher(nil).Decide(t.Context(), late, m)
	if dec2.Action != dispatch.Dropped || dec2.Cause != dispatch.CauseSuperseded {
		t.Errorf("Decide() of an older request = %s/%s (%s), want dropped/superseded", dec2.Action, dec2.Cause, dec2.Reason)
	}
	if got := record(t, f, dec2.BuildID); got.SupersededBy != dec.BuildID {
		t.Errorf("older request superseded by %q, want %s", got.SupersededBy, dec.BuildID)
	}
	if n := f.launcher.Calls(); n != 0 {
		t.Errorf("%d launches, want none", n)
	}
}

// TestLaunchRecordsThePolicy checks what a launch records of the
// descriptor: the retries (capped by the operator) and whether a newer
// request supersedes the build.
func TestLaunchRecordsThePolicy(t *testing.T) {
	t.Parallel()
	cases := []struct {
		descriptor, ref string
		cap             int
		retries         int
		supersedable    bool
	}{
		{`{"buildImage":"x"}`, "dev", 0, 2, true},
		{`{"buildImage":"x","retries":{"infra":5}}`, "dev", 3, 3, true},
		{`{"buildImage":"x","retries":{"infra":5}}`, "dev", -1, 0, true},
		{`{"buildImage":"x","supersede":{"queued":false}}`, "dev", 0, 2, false},
		{`{"buildImage":"x","supersede":{"exceptRefRegex":"main"}}`, "main", 0, 2, false},
	}
	for _, tc := range cases {
		f := newFixture(0, buildtest.NewClock(t0))
		f.catalog.Set("decap-ci/sup", tc.descriptor)
		f.cfg.MaxInfraRetries = tc.cap
		req := request("decap-ci/sup", tc.ref, build.TriggerPush, t0)
		if dec := f.dispatcher(nil).Decide(t.Context(), req, message(t, req)); dec.Action != dispatch.Launched {
			t.Fatalf("%s: Decide() = %s (%s)", tc.descriptor, dec.Action, dec.Reason)
		}
		rec := record(t, f, req.BuildID)
		if rec.InfraRetries != tc.retries || rec.Supersedable != tc.supersedable || rec.LaunchingAt.IsZero() {
			t.Errorf("%s, cap %d: record retries %d, supersedable %t, launching %v; want %d, %t, set",
				tc.descriptor, tc.cap, rec.InfraRetries, rec.Supersedable, rec.LaunchingAt, tc.retries, tc.supersedable)
		}
	}
}
