package buildtest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecordsUnfinished checks Unfinished: exactly one lock key's queued,
// deferred and running records, oldest first, whatever other keys share
// its team, project or a prefix of its ref; records that end leave it.
func TestRecordsUnfinished(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 2, 12, 0, 0, 0, time.UTC)
	key := "ae6rt/p/feature/x"
	if got, err := s.Unfinished(t.Context(), key); err != nil || len(got) != 0 {
		t.Fatalf("Unfinished(%s) of an empty store = %v, %v; want none", key, got, err)
	}
	type entry struct {
		team, project, ref string
		at                 time.Duration
		status             build.Status
	}
	entries := []entry{
		{"ae6rt", "p", "feature/x", 3 * time.Second, build.StatusQueued},
		{"ae6rt", "p", "feature/x", time.Second, build.StatusDeferred},
		{"ae6rt", "p", "feature/x", 2 * time.Second, build.StatusRunning},
		{"ae6rt", "p", "feature/x", -time.Second, build.StatusQueued}, // saved late, queued first
		{"ae6rt", "p", "feature/x", time.Second, build.StatusQueued},  // the same QueuedAt: BuildID breaks the tie
		{"ae6rt", "p", "feature/x", 0, build.StatusSucceeded},
		{"ae6rt", "p", "feature/x", 0, build.StatusSuperseded},
		{"ae6rt", "p", "feature/x", 4 * time.Second, build.StatusQueued},   // starts below, then ends
		{"ae6rt", "p", "feature/x", 5 * time.Second, build.StatusDeferred}, // superseded below
		// Other keys: a ref that extends or prefixes this one, another
		// project, another team.
		{"ae6rt", "p", "feature/x-2", time.Second, build.StatusQueued},
		{"ae6rt", "p", "feature", time.Second, build.StatusRunning},
		{"ae6rt", "p", "x", time.Second, build.StatusQueued},
		{"ae6rt", "p2", "feature/x", time.Second, build.StatusQueued},
		{"other", "p", "feature/x", time.Second, build.StatusDeferred},
	}
	var recs []build.Record
	for _, e := range entries {
		r := newRecord(base.Add(e.at), e.team, e.project, e.status)
		r.Ref = e.ref
		saveRecord(t, s, r)
		recs = append(recs, r)
	}
	recs[7].Status, recs[7].StartedAt = build.StatusRunning, base.Add(time.Minute)
	saveRecord(t, s, recs[7])
	recs[7].Status, recs[7].FinishedAt = build.StatusFailed, base.Add(2*time.Minute)
	saveRecord(t, s, recs[7])
	gone := recs[8]
	if err := gone.Supersede(base.Add(time.Minute), recs[0].BuildID); err != nil {
		t.Fatal(err)
	}
	if err := s.EndWaiting(t.Context(), gone); err != nil {
		t.Fatalf("EndWaiting(%s) error = %v", gone.BuildID, err)
	}
	for i := range recs { // as stored: with their numbers
		var err error
		if recs[i], err = s.Get(t.Context(), recs[i].BuildID); err != nil {
			t.Fatal(err)
		}
	}

	want := []build.Record{recs[3], recs[1], recs[4], recs[2], recs[0]}
	if recs[4].BuildID < recs[1].BuildID {
		want[1], want[2] = recs[4], recs[1]
	}
	got, err := s.Unfinished(t.Context(), key)
	if err != nil {
		t.Fatalf("Unfinished(%s) error = %v", key, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Unfinished(%s) (-want +got):\n%s", key, diff)
	}
	for _, k := range []string{"ae6rt/p/feature", "ae6rt/p/feature/x-2", "ae6rt/p2/feature/x", "other/p/feature/x"} {
		got, err := s.Unfinished(t.Context(), k)
		if err != nil || len(got) != 1 || got[0].LockKey() != k {
			t.Errorf("Unfinished(%s) = %d records, %v; want its one record", k, len(got), err)
		}
	}
	for _, k := range []string{"", "ae6rt/p", "ae6rt//main", "../p/main", "ae6rt/p/refs/heads/main"} {
		if _, err := s.Unfinished(t.Context(), k); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Unfinished(%q) error = %v, want ErrInvalid", k, err)
		}
	}
}

// TestRecordsEndWaiting checks EndWaiting's compare-and-swap: it ends a
// queued or deferred record, and refuses, changing nothing, a record that
// is running, final or being launched; it wants a final record and an
// existing one.
func TestRecordsEndWaiting(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 3, 12, 0, 0, 0, time.UTC)
	newer := build.NewID(base.Add(time.Hour))
	cases := []struct {
		name   string
		stored func(r *build.Record)
		ok     bool
	}{
		{"queued", func(r *build.Record) {}, true},
		{"deferred", func(r *build.Record) {
			r.Status, r.Reason, r.NextAttemptAt = build.StatusDeferred, "busy", base.Add(time.Minute)
		}, true},
		{"queued, launching", func(r *build.Record) { r.LaunchingAt = base.Add(time.Second) }, false},
		{"deferred, launching", func(r *build.Record) {
			r.Status, r.Reason, r.LaunchingAt = build.StatusDeferred, "busy", base.Add(time.Second)
		}, false},
		{"running", func(r *build.Record) { r.Status, r.StartedAt = build.StatusRunning, base.Add(time.Second) }, false},
		{"succeeded", func(r *build.Record) { r.Status, r.FinishedAt = build.StatusSucceeded, base.Add(time.Second) }, false},
		{"cancelled", func(r *build.Record) { r.Status, r.FinishedAt = build.StatusCancelled, base.Add(time.Second) }, false},
		{"superseded", func(r *build.Record) {
			r.Status, r.FinishedAt, r.SupersededBy = build.StatusSuperseded, base.Add(time.Second), build.NewID(base)
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stored := newRecord(base, "ae6rt", "p", build.StatusQueued)
			tc.stored(&stored)
			saveRecord(t, s, stored)
			before, err := s.Get(t.Context(), stored.BuildID)
			if err != nil {
				t.Fatal(err)
			}
			end := before
			// What a supersede writes, whatever the stored status.
			end.Status, end.Reason, end.FinishedAt, end.NextAttemptAt = build.StatusSuperseded, "superseded by "+string(newer), base.Add(time.Minute), time.Time{}
			end.SupersededBy, end.LaunchingAt = newer, time.Time{}
			end.Number = before.Number + 100 // the store's own: kept
			err = s.EndWaiting(t.Context(), end)
			got, gerr := s.Get(t.Context(), stored.BuildID)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if !tc.ok {
				if !errors.Is(err, build.ErrConflict) {
					t.Errorf("EndWaiting() of a %s record error = %v, want ErrConflict", tc.name, err)
				}
				if diff := cmp.Diff(before, got); diff != "" {
					t.Errorf("a refused EndWaiting changed the record (-before +after):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("EndWaiting() of a %s record error = %v", tc.name, err)
			}
			end.Number = before.Number
			if diff := cmp.Diff(end, got); diff != "" {
				t.Errorf("record after EndWaiting (-want +got):\n%s", diff)
			}
			if _, err := s.Unfinished(t.Context(), stored.LockKey()); err != nil {
				t.Fatal(err)
			}
			// Final now: a second end is refused, so is a Save back.
			if err := s.EndWaiting(t.Context(), end); !errors.Is(err, build.ErrConflict) {
				t.Errorf("EndWaiting() of an ended record error = %v, want ErrConflict", err)
			}
			if err := s.Save(t.Context(), before); !errors.Is(err, build.ErrConflict) {
				t.Errorf("Save() of the waiting record over the ended one error = %v, want ErrConflict", err)
			}
		})
	}
	t.Run("not final", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "p", build.StatusQueued)
		saveRecord(t, s, r)
		r.Status = build.StatusRunning
		if err := s.EndWaiting(t.Context(), r); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("EndWaiting() of a running record error = %v, want ErrInvalid", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "p", build.StatusSuperseded)
		if err := s.EndWaiting(t.Context(), r); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("EndWaiting() of a missing record error = %v, want ErrNotFound", err)
		}
	})
}

// TestRecordsSupersedeRacesLaunch takes a supersede (read, Supersede,
// EndWaiting: what ingest does for a newer request) and a launch
// (Launching saved, then Start saved: what a dispatcher does before and
// after it starts the build) through the two interleavings a race between
// them comes down to: whichever writes first wins, and the other's write
// is refused. A build never runs under a superseded record.
// CheckSupersedeRacesLaunch races the two for real; each adapter's tests
// run it (an emulator that does not make a conditional write atomic, as
// moto does not, runs it with its requests serialized).
func TestRecordsSupersedeRacesLaunch(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 4, 11, 0, 0, 0, time.UTC)
	newer := build.NewID(base.Add(time.Hour))
	// The two interleavings a race comes down to, one step at a time.
	t.Run("supersede reads, launch claims, supersede writes", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "p", build.StatusQueued)
		saveRecord(t, s, r)
		seen, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		launching := seen
		if err := launching.Launching(base.Add(time.Second), 2, true); err != nil {
			t.Fatal(err)
		}
		saveRecord(t, s, launching)
		if err := seen.Supersede(base.Add(2*time.Second), newer); err != nil {
			t.Fatal(err)
		}
		if err := s.EndWaiting(t.Context(), seen); !errors.Is(err, build.ErrConflict) {
			t.Errorf("EndWaiting() of a request being launched error = %v, want ErrConflict", err)
		}
		if got, err := s.Get(t.Context(), r.BuildID); err != nil || got.Status != build.StatusQueued || got.LaunchingAt.IsZero() {
			t.Errorf("record after the refused supersede = %s, launching %v, %v; want queued and launching", got.Status, got.LaunchingAt, err)
		}
	})
	t.Run("launch reads, supersede writes, launch claims", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "p", build.StatusDeferred)
		saveRecord(t, s, r)
		seen, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		ended := seen
		if err := ended.Supersede(base.Add(time.Second), newer); err != nil {
			t.Fatal(err)
		}
		if err := s.EndWaiting(t.Context(), ended); err != nil {
			t.Fatalf("EndWaiting() error = %v", err)
		}
		if err := seen.Launching(base.Add(2*time.Second), 2, true); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(t.Context(), seen); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Save() of the launch claim over a superseded record error = %v, want ErrConflict: the build would start", err)
		}
		if got, err := s.Get(t.Context(), r.BuildID); err != nil || got.Status != build.StatusSuperseded {
			t.Errorf("record after the refused claim = %s, %v; want superseded", got.Status, err)
		}
	})
	// A writer that read the request before the claim (a second
	// dispatcher given the same message, a second reaper recording the
	// same retry) saves it waiting after the claim: the claim stays, so
	// the supersede is still refused.
	t.Run("launch claims, a stale waiting write, supersede writes", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "p", build.StatusQueued)
		saveRecord(t, s, r)
		seen, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		launching := seen
		if err := launching.Launching(base.Add(time.Second), 3, true); err != nil {
			t.Fatal(err)
		}
		if err := launching.GrantSecrets([]string{"NPM_TOKEN"}, "DEPLOY_KEY is not set"); err != nil {
			t.Fatal(err)
		}
		saveRecord(t, s, launching)
		stale := seen
		if err := stale.Defer(base.Add(2*time.Second), base.Add(time.Minute), "another build of the key runs"); err != nil {
			t.Fatal(err)
		}
		saveRecord(t, s, stale)
		got, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LaunchingAt.Equal(launching.LaunchingAt) || got.InfraRetries != 3 || !got.Supersedable {
			t.Errorf("claim after a stale waiting write = launching %v, %d retries, supersedable %t; want %v, 3, true",
				got.LaunchingAt, got.InfraRetries, got.Supersedable, launching.LaunchingAt)
		}
		if !slices.Equal(got.Secrets, []string{"NPM_TOKEN"}) || got.SecretsWithheld != "DEPLOY_KEY is not set" {
			t.Errorf("secrets granted with the claim, after a stale waiting write = %q withheld %q; want [NPM_TOKEN], withheld %q",
				got.Secrets, got.SecretsWithheld, "DEPLOY_KEY is not set")
		}
		if got.Status != build.StatusDeferred || got.Reason != stale.Reason {
			t.Errorf("record after a stale waiting write = %s %q, want the write's deferral", got.Status, got.Reason)
		}
		end := seen
		if err := end.Supersede(base.Add(3*time.Second), newer); err != nil {
			t.Fatal(err)
		}
		if err := s.EndWaiting(t.Context(), end); !errors.Is(err, build.ErrConflict) {
			t.Errorf("EndWaiting() of a request being launched, after a stale write, error = %v, want ErrConflict", err)
		}
	})
}

// CheckSupersedeRacesLaunch races, record by record, a supersede against a
// launch (see TestRecordsSupersedeRacesLaunch) over n records, the two
// sides going through different stores of one backend when there are
// several (ingest and a dispatcher in two processes). Whatever the
// interleaving, exactly one wins: either the request is superseded and the
// launch's first write is refused before anything started, or it launches
// and the supersede is refused.
func CheckSupersedeRacesLaunch(t *testing.T, stores []Records, n int) {
	t.Helper()
	base := time.Date(2025, time.March, 4, 12, 0, 0, 0, time.UTC)
	newer := build.NewID(base.Add(time.Hour))
	ing, disp := stores[0], stores[len(stores)-1]
	recs := make([]build.Record, n)
	for i := range recs {
		recs[i] = newRecord(base.Add(time.Duration(i)*time.Millisecond), "ae6rt", fmt.Sprintf("race%d", i%3), build.StatusQueued)
		if i%2 == 1 {
			recs[i].Status, recs[i].Reason = build.StatusDeferred, "busy"
		}
		saveRecord(t, ing, recs[i])
	}
	type result struct{ superseded, launched bool }
	results := make([]result, n)
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { // ingest, for a newer request
			cur, err := ing.Get(t.Context(), r.BuildID)
			if err != nil {
				t.Errorf("Get(%s) error = %v", r.BuildID, err)
				return
			}
			if !cur.Waiting() || !cur.LaunchingAt.IsZero() {
				return // seen launching or started: not a waiting request any more
			}
			if err := cur.Supersede(base.Add(time.Hour), newer); err != nil {
				t.Errorf("Supersede(%s) error = %v", r.BuildID, err)
				return
			}
			switch err := ing.EndWaiting(t.Context(), cur); {
			case err == nil:
				results[i].superseded = true
			case !errors.Is(err, build.ErrConflict):
				t.Errorf("EndWaiting(%s) error = %v", r.BuildID, err)
			}
		})
		wg.Go(func() { // a dispatcher, with the lock
			cur, err := disp.Get(t.Context(), r.BuildID)
			if err != nil {
				t.Errorf("Get(%s) error = %v", r.BuildID, err)
				return
			}
			if cur.Status.Final() {
				return
			}
			if err := cur.Launching(base.Add(time.Minute), 2, true); err != nil {
				t.Errorf("Launching(%s) error = %v", r.BuildID, err)
				return
			}
			switch err := disp.Save(t.Context(), cur); {
			case errors.Is(err, build.ErrConflict):
				return // superseded first: nothing was started
			case err != nil:
				t.Errorf("Save(%s, launching) error = %v", r.BuildID, err)
				return
			}
			// Here the dispatcher starts the build.
			results[i].launched = true
			if err := cur.Start(base.Add(time.Minute), r.BuildID.PodName(), "c0ffee"); err != nil {
				t.Errorf("Start(%s) error = %v", r.BuildID, err)
				return
			}
			if err := disp.Save(t.Context(), cur); err != nil {
				t.Errorf("Save(%s, running) of a launched build error = %v; it runs under a record that says otherwise", r.BuildID, err)
			}
		})
	}
	wg.Wait()
	for i, r := range recs {
		got, err := ing.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		res := results[i]
		switch {
		case res.superseded && res.launched:
			t.Errorf("build %s was superseded and launched: it runs under a superseded record (stored %s)", r.BuildID, got.Status)
		case !res.superseded && !res.launched:
			t.Errorf("build %s was neither superseded nor launched (stored %s)", r.BuildID, got.Status)
		case res.superseded && got.Status != build.StatusSuperseded:
			t.Errorf("build %s superseded, stored %s", r.BuildID, got.Status)
		case res.launched && got.Status != build.StatusRunning:
			t.Errorf("build %s launched, stored %s", r.BuildID, got.Status)
		}
	}
}
