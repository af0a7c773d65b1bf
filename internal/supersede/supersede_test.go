package supersede_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/supersede"
)

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// request returns the queued record of a request of ae6rt/p/ref accepted
// at t0 plus at.
func request(ref string, at time.Duration) build.Record {
	now := t0.Add(at)
	return build.RecordFor(build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "ae6rt", Project: "p",
		Ref: ref, RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now})
}

func save(t *testing.T, s *buildtest.FakeRecords, recs ...*build.Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Save(t.Context(), *r); err != nil {
			t.Fatal(err)
		}
		stored, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		*r = stored
	}
}

func statuses(t *testing.T, s *buildtest.FakeRecords, recs ...build.Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		got, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		st := string(got.Status)
		if got.SupersededBy != "" {
			st += " by " + string(got.SupersededBy)
		}
		if got.Status == build.StatusRunning && !got.CancelRequestedAt.IsZero() {
			st += ", stopping"
		}
		out = append(out, st)
	}
	return out
}

// TestOlder checks what a newer request ends under each policy: older
// waiting requests, the running build with running: true, never a request
// a dispatcher is launching, never a newer request or another key's.
func TestOlder(t *testing.T) {
	t.Parallel()
	type fixture struct {
		queued, deferred, running, launching, otherRef, done build.Record
	}
	setup := func(t *testing.T) (*buildtest.FakeRecords, fixture, build.Record) {
		s := buildtest.NewRecords()
		f := fixture{
			queued: request("main", 3*time.Second), deferred: request("main", time.Second), running: request("main", 0),
			launching: request("main", 2*time.Second), otherRef: request("main-2", time.Second),
			done: request("main", -time.Second),
		}
		f.deferred.Status, f.deferred.Reason = build.StatusDeferred, "busy"
		f.running.Status, f.running.StartedAt = build.StatusRunning, t0.Add(time.Second)
		f.launching.LaunchingAt = t0.Add(5 * time.Second)
		f.done.Status = build.StatusSucceeded
		save(t, s, &f.queued, &f.deferred, &f.running, &f.launching, &f.otherRef, &f.done)
		newer := request("main", time.Minute)
		save(t, s, &newer)
		return s, f, newer
	}
	cases := []struct {
		name   string
		p      build.SupersedePolicy
		want   func(f fixture, by string) []string // queued, deferred, running, launching, otherRef, done
		result func(f fixture) supersede.Result
	}{
		{"queued (the default)", build.SupersedePolicy{Queued: true},
			func(f fixture, by string) []string {
				return []string{"superseded by " + by, "superseded by " + by, "running", "queued", "queued", "succeeded"}
			},
			func(f fixture) supersede.Result {
				return supersede.Result{Superseded: []build.ID{f.deferred.BuildID, f.queued.BuildID}}
			}},
		{"queued and running", build.SupersedePolicy{Queued: true, Running: true},
			func(f fixture, by string) []string {
				return []string{"superseded by " + by, "superseded by " + by, "running by " + by + ", stopping", "queued", "queued", "succeeded"}
			},
			func(f fixture) supersede.Result {
				return supersede.Result{Superseded: []build.ID{f.deferred.BuildID, f.queued.BuildID}, Stopping: []build.ID{f.running.BuildID}}
			}},
		{"running only", build.SupersedePolicy{Running: true},
			func(f fixture, by string) []string {
				return []string{"queued", "deferred", "running by " + by + ", stopping", "queued", "queued", "succeeded"}
			},
			func(f fixture) supersede.Result { return supersede.Result{Stopping: []build.ID{f.running.BuildID}} }},
		{"nothing (exempt ref, or off)", build.SupersedePolicy{},
			func(f fixture, by string) []string {
				return []string{"queued", "deferred", "running", "queued", "queued", "succeeded"}
			},
			func(f fixture) supersede.Result { return supersede.Result{} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, f, newer := setup(t)
			res, err := supersede.Older(t.Context(), s, newer, tc.p, t0.Add(2*time.Minute))
			if err != nil {
				t.Fatalf("Older() error = %v", err)
			}
			if diff := cmp.Diff(tc.result(f), res); diff != "" {
				t.Errorf("Older() result (-want +got):\n%s", diff)
			}
			got := statuses(t, s, f.queued, f.deferred, f.running, f.launching, f.otherRef, f.done)
			if diff := cmp.Diff(tc.want(f, string(newer.BuildID)), got); diff != "" {
				t.Errorf("statuses of queued, deferred, running, launching, other ref, done (-want +got):\n%s", diff)
			}
			if st := statuses(t, s, newer); st[0] != "queued" {
				t.Errorf("the newer request is %s, want queued", st[0])
			}
		})
	}
}

// TestOlderFindsANewerOne accepts a request after which a newer one was
// accepted already (ingest replicas racing): the accepted request and the
// older ones end superseded by the newest, which goes on.
func TestOlderFindsANewerOne(t *testing.T) {
	t.Parallel()
	s := buildtest.NewRecords()
	older, accepted, newest := request("main", 0), request("main", time.Second), request("main", 2*time.Second)
	save(t, s, &older, &accepted, &newest)
	res, err := supersede.Older(t.Context(), s, accepted, build.SupersedePolicy{Queued: true}, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("Older() error = %v", err)
	}
	if diff := cmp.Diff(supersede.Result{Superseded: []build.ID{older.BuildID, accepted.BuildID}}, res); diff != "" {
		t.Errorf("Older() result (-want +got):\n%s", diff)
	}
	by := string(newest.BuildID)
	if diff := cmp.Diff([]string{"superseded by " + by, "superseded by " + by, "queued"}, statuses(t, s, older, accepted, newest)); diff != "" {
		t.Errorf("statuses of older, accepted, newest (-want +got):\n%s", diff)
	}
}

// TestOlderKeepsACancel checks that a running build someone asked to
// cancel stays cancelled: a newer request does not turn it into a
// supersede.
func TestOlderKeepsACancel(t *testing.T) {
	t.Parallel()
	s := buildtest.NewRecords()
	running := request("main", 0)
	running.Status, running.StartedAt, running.CancelRequestedAt = build.StatusRunning, t0, t0.Add(time.Second)
	newer := request("main", time.Minute)
	save(t, s, &running, &newer)
	res, err := supersede.Older(t.Context(), s, newer, build.SupersedePolicy{Queued: true, Running: true}, t0.Add(2*time.Minute))
	if err != nil || len(res.Stopping) != 0 {
		t.Errorf("Older() = %+v, %v; want nothing stopped", res, err)
	}
	if got, _ := s.Get(t.Context(), running.BuildID); got.SupersededBy != "" || !got.CancelRequestedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("cancelled build after Older: supersededBy %q, cancel requested at %v; want the cancel as it was", got.SupersededBy, got.CancelRequestedAt)
	}
}

// TestOlderAcceptedAtOnce accepts several requests of one key at once, as
// ingest replicas may, each superseding the older ones: only the newest
// survives, whatever the interleaving, and none supersedes a newer one.
func TestOlderAcceptedAtOnce(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		s := buildtest.NewRecords()
		reqs := make([]build.Record, 6)
		for i := range reqs {
			reqs[i] = request("main", time.Duration(i)*time.Millisecond)
		}
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Go(func() {
				if err := s.Save(t.Context(), reqs[i]); err != nil {
					t.Error(err)
					return
				}
				if _, err := supersede.Older(t.Context(), s, reqs[i], build.SupersedePolicy{Queued: true}, t0.Add(time.Minute)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for i, r := range reqs {
			got, err := s.Get(t.Context(), r.BuildID)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case i == len(reqs)-1 && got.Status != build.StatusQueued:
				t.Errorf("round %d: the newest request is %s, want queued", round, got.Status)
			case i < len(reqs)-1 && got.Status != build.StatusSuperseded:
				t.Errorf("round %d: request %d is %s, want superseded", round, i, got.Status)
			case got.Status == build.StatusSuperseded && !r.Older(build.Record{BuildID: got.SupersededBy, QueuedAt: recordOf(reqs, got.SupersededBy).QueuedAt}):
				t.Errorf("round %d: request %d superseded by the older %s", round, i, got.SupersededBy)
			}
		}
	}
}

func recordOf(recs []build.Record, id build.ID) build.Record {
	for _, r := range recs {
		if r.BuildID == id {
			return r
		}
	}
	return build.Record{}
}

// TestStarted checks the dispatcher's look after a launch: a newer request
// accepted while the build launched stops it when running: true, and only
// then.
func TestStarted(t *testing.T) {
	t.Parallel()
	s := buildtest.NewRecords()
	started := request("main", 0)
	started.Status, started.StartedAt = build.StatusRunning, t0.Add(time.Second)
	older := request("main", -time.Minute)
	save(t, s, &started, &older)
	if by, err := supersede.Started(t.Context(), s, started, build.SupersedePolicy{Queued: true, Running: true}, t0.Add(time.Minute)); err != nil || by != "" {
		t.Errorf("Started() with no newer request = %q, %v; want \"\", nil", by, err)
	}
	newer, newest := request("main", time.Second), request("main", 2*time.Second)
	save(t, s, &newer, &newest)
	if by, err := supersede.Started(t.Context(), s, started, build.SupersedePolicy{Queued: true}, t0.Add(time.Minute)); err != nil || by != "" {
		t.Errorf("Started() without running: true = %q, %v; want \"\", nil", by, err)
	}
	by, err := supersede.Started(t.Context(), s, started, build.SupersedePolicy{Running: true}, t0.Add(time.Minute))
	if err != nil || by != newest.BuildID {
		t.Fatalf("Started() = %q, %v; want the newest request %s", by, err, newest.BuildID)
	}
	if got := statuses(t, s, started); got[0] != "running by "+string(newest.BuildID)+", stopping" {
		t.Errorf("started build after Started: %s", got[0])
	}
	if id, err := supersede.HasNewer(t.Context(), s, started); err != nil || id != newest.BuildID {
		t.Errorf("HasNewer() = %q, %v; want %s", id, err, newest.BuildID)
	}
	if id, err := supersede.HasNewer(t.Context(), s, newest); err != nil || id != "" {
		t.Errorf("HasNewer() of the newest = %q, %v; want none", id, err)
	}
}

// TestRunningIsNeverNewer accepts a request whose time is earlier than the
// running build's (another producer's clock, or its own requestedAt): the
// queue handed the running build out first, so it is the older one; the
// request is not superseded, and with running: true it stops the build.
func TestRunningIsNeverNewer(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{false, true} {
		s := buildtest.NewRecords()
		build1 := request("main", time.Minute)
		build1.Status, build1.StartedAt = build.StatusRunning, t0.Add(time.Minute)
		accepted := request("main", 0)
		save(t, s, &build1, &accepted)
		res, err := supersede.Older(t.Context(), s, accepted, build.SupersedePolicy{Queued: true, Running: running}, t0.Add(2*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"running", "queued"}
		if running {
			want[0] = "running by " + string(accepted.BuildID) + ", stopping"
		}
		if diff := cmp.Diff(want, statuses(t, s, build1, accepted)); diff != "" {
			t.Errorf("running %t: statuses of the running build and the accepted request (-want +got):\n%s", running, diff)
		}
		if len(res.Superseded) != 0 {
			t.Errorf("running %t: superseded %v, want none", running, res.Superseded)
		}
	}
}

// TestRebuildSupersedesNothing: a rebuild (often of an older commit) ends
// no waiting request and stops no running build, nor is it a newer request
// that stops a build when it starts or forbids a retry; a later push
// supersedes it like any waiting request.
func TestRebuildSupersedesNothing(t *testing.T) {
	t.Parallel()
	all := build.SupersedePolicy{Queued: true, Running: true}
	rebuildAt := func(at time.Duration) build.Record {
		r := request("main", at)
		r.RebuildOf = build.NewID(t0.Add(-time.Hour))
		return r
	}

	// Only a rebuild is newer than the running build.
	s := buildtest.NewRecords()
	running, rebuild := request("main", 0), rebuildAt(time.Second)
	running.Status, running.StartedAt = build.StatusRunning, t0.Add(time.Second)
	save(t, s, &running, &rebuild)
	if by, err := supersede.Started(t.Context(), s, running, all, t0.Add(time.Minute)); err != nil || by != "" {
		t.Errorf("Started(running) = %q, %v; want it to go on (only a rebuild is newer)", by, err)
	}
	if by, err := supersede.HasNewer(t.Context(), s, running); err != nil || by != "" {
		t.Errorf("HasNewer(running) = %q, %v; want none (only a rebuild is newer)", by, err)
	}

	// A rebuild accepted behind a running build and a waiting push.
	s = buildtest.NewRecords()
	running, waiting, rebuild := request("main", 0), request("main", time.Second), rebuildAt(2*time.Second)
	running.Status, running.StartedAt = build.StatusRunning, t0.Add(time.Second)
	save(t, s, &running, &waiting, &rebuild)
	res, err := supersede.Older(t.Context(), s, rebuild, all, t0.Add(time.Minute))
	if err != nil || len(res.Superseded)+len(res.Stopping) != 0 {
		t.Errorf("Older(rebuild) = %+v, %v; want nothing done", res, err)
	}
	if diff := cmp.Diff([]string{"running", "queued", "queued"}, statuses(t, s, running, waiting, rebuild)); diff != "" {
		t.Errorf("statuses of running, waiting, rebuild after the rebuild (-want +got):\n%s", diff)
	}

	// A later push ends them all, the rebuild included.
	push := request("main", 3*time.Second)
	save(t, s, &push)
	if _, err := supersede.Older(t.Context(), s, push, all, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	by := string(push.BuildID)
	want := []string{"running by " + by + ", stopping", "superseded by " + by, "superseded by " + by, "queued"}
	if diff := cmp.Diff(want, statuses(t, s, running, waiting, rebuild, push)); diff != "" {
		t.Errorf("statuses after a later push (-want +got):\n%s", diff)
	}
}

// TestRetrySupersedesNothing: a retry (the same commit as the failed build
// it repeats, queued at the failure's time) ends no waiting request and
// stops no build, even when its queue time is later than a push accepted
// while the failed build ended, which the reaper did not see yet; a later
// push supersedes it like any waiting request.
func TestRetrySupersedesNothing(t *testing.T) {
	t.Parallel()
	all := build.SupersedePolicy{Queued: true, Running: true}
	retryAt := func(at time.Duration) build.Record {
		r := request("main", at)
		r.RetryOf, r.Attempt = build.NewID(t0.Add(-time.Hour)), 2
		return r
	}

	// A push accepted just before the failure, then its retry.
	s := buildtest.NewRecords()
	push, retry := request("main", 0), retryAt(time.Second)
	save(t, s, &push, &retry)
	res, err := supersede.Older(t.Context(), s, push, all, t0.Add(time.Minute))
	if err != nil || len(res.Superseded)+len(res.Stopping) != 0 {
		t.Errorf("Older(push) = %+v, %v; want nothing done", res, err)
	}
	if diff := cmp.Diff([]string{"queued", "queued"}, statuses(t, s, push, retry)); diff != "" {
		t.Errorf("statuses of the push and the retry (-want +got):\n%s", diff)
	}
	// The push starts first (it was queued first): the retry does not stop it.
	push.Status, push.StartedAt = build.StatusRunning, t0.Add(2*time.Second)
	save(t, s, &push)
	if by, err := supersede.Started(t.Context(), s, push, all, t0.Add(time.Minute)); err != nil || by != "" {
		t.Errorf("Started(push) = %q, %v; want it to go on (only a retry is newer)", by, err)
	}
	if by, err := supersede.HasNewer(t.Context(), s, push); err != nil || by != "" {
		t.Errorf("HasNewer(push) = %q, %v; want none (only a retry is newer)", by, err)
	}

	// A later push ends the waiting retry.
	later := request("main", 3*time.Second)
	save(t, s, &later)
	if _, err := supersede.Older(t.Context(), s, later, all, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	by := string(later.BuildID)
	want := []string{"running by " + by + ", stopping", "superseded by " + by, "queued"}
	if diff := cmp.Diff(want, statuses(t, s, push, retry, later)); diff != "" {
		t.Errorf("statuses after a later push (-want +got):\n%s", diff)
	}
}
