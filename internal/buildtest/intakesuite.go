package buildtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/supersede"
)

// IntakeStores is an Intake and the ports it writes, over one store.
type IntakeStores struct {
	Intake      build.Intake
	Idempotency Idempotency
	Records     Records
	Queue       Queue
}

// TestIntake runs the Intake contract (build.Intake). newStores must return
// empty stores that read time from clock. Subtests run in parallel.
func TestIntake(t *testing.T, newStores func(t *testing.T, clock *Clock) IntakeStores) {
	const ttl = 7 * 24 * time.Hour
	enqueue := func(t *testing.T, s IntakeStores, req build.Request, claims ...string) build.ID {
		t.Helper()
		owner, err := s.Intake.Enqueue(t.Context(), req, claims, ttl)
		if err != nil {
			t.Fatalf("Enqueue(%s, %q) error = %v", req.BuildID, claims, err)
		}
		return owner
	}
	claimedBy := func(t *testing.T, s IntakeStores, clock *Clock, key string) build.ID {
		t.Helper()
		owner, err := s.Idempotency.Claim(t.Context(), key, build.NewID(clock.Now()), ttl)
		if err != nil {
			t.Fatalf("Claim(%s) error = %v", key, err)
		}
		return owner
	}
	noRecord := func(t *testing.T, s IntakeStores, id build.ID) {
		t.Helper()
		if r, err := s.Records.Get(t.Context(), id); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Get(%s) = %s, %v; want ErrNotFound", id, r.Status, err)
		}
	}

	t.Run("a new request is claimed, recorded and published", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		req := newRequest(clock, "team", "project", "main")
		req.DeliveryID = "d1"
		if owner := enqueue(t, s, req, "push:k1", req.IdempotencyKey()); owner != req.BuildID {
			t.Fatalf("Enqueue() = %s, want the request's own %s", owner, req.BuildID)
		}
		r, err := s.Records.Get(t.Context(), req.BuildID)
		if err != nil || r.Status != build.StatusQueued || r.LockKey() != req.LockKey() || r.DeliveryID != "d1" || r.Number != 1 {
			t.Errorf("Get() = %s %s %q #%d, %v; want queued %s d1 #1", r.Status, r.LockKey(), r.DeliveryID, r.Number, err, req.LockKey())
		}
		if got := intakeMessages(t, s); len(got) != 1 || got[0] != req.BuildID {
			t.Errorf("messages %v, want [%s]", got, req.BuildID)
		}
		for _, key := range []string{"push:k1", req.IdempotencyKey()} {
			if owner := claimedBy(t, s, clock, key); owner != req.BuildID {
				t.Errorf("claim %s owned by %s, want %s", key, owner, req.BuildID)
			}
		}
	})

	t.Run("a redelivery answers with the first build and writes nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		first := newRequest(clock, "team", "project", "main")
		first.DeliveryID = "d1"
		enqueue(t, s, first, first.IdempotencyKey())
		clock.Advance(time.Minute)
		again := newRequest(clock, "team", "project", "main")
		again.DeliveryID = "d1"
		if owner := enqueue(t, s, again, again.IdempotencyKey()); owner != first.BuildID {
			t.Errorf("Enqueue() of a redelivery = %s, want the first build %s", owner, first.BuildID)
		}
		noRecord(t, s, again.BuildID)
		if got := intakeMessages(t, s); len(got) != 1 || got[0] != first.BuildID {
			t.Errorf("messages %v, want only the first build's [%s]", got, first.BuildID)
		}
	})

	t.Run("later claims follow the owner of an earlier one", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		earlier := build.NewID(clock.Now())
		if _, err := s.Idempotency.Claim(t.Context(), "push:k1", earlier, ttl); err != nil {
			t.Fatal(err)
		}
		req := newRequest(clock, "team", "project", "main")
		req.DeliveryID = "d2"
		if owner := enqueue(t, s, req, "push:k1", req.IdempotencyKey()); owner != earlier {
			t.Errorf("Enqueue() = %s, want the earlier build %s", owner, earlier)
		}
		if owner := claimedBy(t, s, clock, req.IdempotencyKey()); owner != earlier {
			t.Errorf("the delivery's claim is %s's, want the earlier build %s's", owner, earlier)
		}
		noRecord(t, s, req.BuildID)
		if got := intakeMessages(t, s); len(got) != 0 {
			t.Errorf("messages %v, want none", got)
		}
	})

	t.Run("a request without claims is recorded and published", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		req := newRequest(clock, "team", "project", "main")
		req.Trigger = build.TriggerAPI
		if owner := enqueue(t, s, req); owner != req.BuildID {
			t.Errorf("Enqueue() = %s, want %s", owner, req.BuildID)
		}
		if _, err := s.Records.Get(t.Context(), req.BuildID); err != nil {
			t.Errorf("Get() error = %v", err)
		}
		if got := intakeMessages(t, s); len(got) != 1 || got[0] != req.BuildID {
			t.Errorf("messages %v, want [%s]", got, req.BuildID)
		}
	})

	t.Run("superseding", func(t *testing.T) {
		t.Parallel()
		testIntakeSupersedes(t, newStores)
	})

	t.Run("an invalid request writes nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		bad := newRequest(clock, "team", "project", "main")
		bad.Team = "../etc"
		noID := newRequest(clock, "team", "project", "main")
		noID.BuildID = ""
		for _, c := range []struct {
			name   string
			req    build.Request
			claims []string
		}{
			{"hostile team", bad, []string{"push:bad"}},
			{"no build id", noID, []string{"push:bad"}},
			{"empty claim key", newRequest(clock, "team", "project", "main"), []string{"push:bad", ""}},
		} {
			if _, err := s.Intake.Enqueue(t.Context(), c.req, c.claims, ttl); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("%s: Enqueue() error = %v, want ErrInvalid", c.name, err)
			}
			if c.req.BuildID != "" {
				noRecord(t, s, c.req.BuildID)
			}
		}
		fresh := build.NewID(clock.Now())
		if owner, err := s.Idempotency.Claim(t.Context(), "push:bad", fresh, ttl); err != nil || owner != fresh {
			t.Errorf("Claim() after the invalid requests = %s, %v; want %s (they claimed nothing)", owner, err, fresh)
		}
		if got := intakeMessages(t, s); len(got) != 0 {
			t.Errorf("messages %v, want none", got)
		}
	})
}

// testIntakeSupersedes holds Intake.EnqueueSuperseding to supersede.Older's
// outcomes for a project that supersedes waiting requests only: the
// waiting requests of the lock key older than the newest one end
// superseded by it, unless a dispatcher began to launch them; running
// builds, other lock keys, rebuilds and retries are left alone.
func testIntakeSupersedes(t *testing.T, newStores func(t *testing.T, clock *Clock) IntakeStores) {
	const ttl = 7 * 24 * time.Hour
	// waiting saves a queued record of lock key team/project/ref, queued
	// now, after edit, and advances the clock.
	waiting := func(t *testing.T, s IntakeStores, clock *Clock, project, ref string, edit func(r *build.Record)) build.Record {
		t.Helper()
		r := build.RecordFor(newRequest(clock, "team", project, ref))
		if edit != nil {
			edit(&r)
		}
		if err := s.Records.Save(t.Context(), r); err != nil {
			t.Fatalf("Save(%s) error = %v", r.BuildID, err)
		}
		stored, err := s.Records.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatalf("Get(%s) error = %v", r.BuildID, err)
		}
		clock.Advance(time.Second)
		return stored
	}
	accept := func(t *testing.T, s IntakeStores, clock *Clock, req build.Request, claims ...string) (build.ID, []build.ID) {
		t.Helper()
		owner, superseded, err := s.Intake.EnqueueSuperseding(t.Context(), req, claims, ttl, clock.Now())
		if err != nil {
			t.Fatalf("EnqueueSuperseding(%s) error = %v", req.BuildID, err)
		}
		return owner, superseded
	}
	// unchanged fails t unless the records are stored as they were.
	unchanged := func(t *testing.T, s IntakeStores, recs ...build.Record) {
		t.Helper()
		for _, want := range recs {
			got, err := s.Records.Get(t.Context(), want.BuildID)
			if err != nil {
				t.Fatalf("Get(%s) error = %v", want.BuildID, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("record %s changed (-before +after):\n%s", want.BuildID, diff)
			}
		}
	}
	// endedBy fails t unless each record ended superseded by by at now,
	// its number kept.
	endedBy := func(t *testing.T, s IntakeStores, by build.ID, now time.Time, recs ...build.Record) {
		t.Helper()
		for _, r := range recs {
			got, err := s.Records.Get(t.Context(), r.BuildID)
			if err != nil {
				t.Fatalf("Get(%s) error = %v", r.BuildID, err)
			}
			if got.Status != build.StatusSuperseded || got.SupersededBy != by || !got.FinishedAt.Equal(now) || got.Number != r.Number {
				t.Errorf("record %s = %s by %q at %v #%d; want superseded by %s at %v #%d", r.BuildID, got.Status, got.SupersededBy, got.FinishedAt, got.Number, by, now, r.Number)
			}
		}
	}

	t.Run("a new request ends the older waiting requests of its lock key", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		queued := waiting(t, s, clock, "project", "main", nil)
		deferred := waiting(t, s, clock, "project", "main", func(r *build.Record) {
			if err := r.Defer(clock.Now(), clock.Now().Add(time.Minute), "busy"); err != nil {
				t.Fatal(err)
			}
		})
		launching := waiting(t, s, clock, "project", "main", func(r *build.Record) {
			if err := r.Launching(clock.Now(), 0, true); err != nil {
				t.Fatal(err)
			}
		})
		running := waiting(t, s, clock, "project", "main", func(r *build.Record) {
			if err := r.Launching(clock.Now(), 0, true); err != nil {
				t.Fatal(err)
			}
			if err := r.Start(clock.Now(), "pod", ""); err != nil {
				t.Fatal(err)
			}
		})
		otherRef := waiting(t, s, clock, "project", "dev", nil)
		otherProject := waiting(t, s, clock, "other", "main", nil)
		req := newRequest(clock, "team", "project", "main")
		req.DeliveryID = "d1"
		owner, superseded := accept(t, s, clock, req, req.IdempotencyKey())
		if owner != req.BuildID {
			t.Fatalf("EnqueueSuperseding() = %s, want the request's own %s", owner, req.BuildID)
		}
		if want := []build.ID{queued.BuildID, deferred.BuildID}; !slices.Equal(superseded, want) {
			t.Errorf("superseded %v, want %v", superseded, want)
		}
		endedBy(t, s, req.BuildID, clock.Now(), queued, deferred)
		unchanged(t, s, launching, running, otherRef, otherProject)
		if r, err := s.Records.Get(t.Context(), req.BuildID); err != nil || r.Status != build.StatusQueued {
			t.Errorf("Get(%s) = %s, %v; want queued", req.BuildID, r.Status, err)
		}
		if got := intakeMessages(t, s); len(got) != 1 || got[0] != req.BuildID {
			t.Errorf("messages %v, want [%s]", got, req.BuildID)
		}
	})

	t.Run("the request itself ends when a newer one waits", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		older := waiting(t, s, clock, "project", "main", nil)
		req := newRequest(clock, "team", "project", "main")
		clock.Advance(time.Second)
		newer := waiting(t, s, clock, "project", "main", nil) // another producer's, recorded first
		_, superseded := accept(t, s, clock, req)
		if want := []build.ID{older.BuildID, req.BuildID}; !slices.Equal(superseded, want) {
			t.Errorf("superseded %v, want %v", superseded, want)
		}
		stored := build.RecordFor(req)
		stored.Number = 3
		endedBy(t, s, newer.BuildID, clock.Now(), older, stored)
		unchanged(t, s, newer)
		if got := intakeMessages(t, s); len(got) != 1 || got[0] != req.BuildID {
			t.Errorf("messages %v, want [%s]: it was accepted all the same", got, req.BuildID)
		}
	})

	t.Run("rebuilds, retries and redeliveries supersede nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		first := newRequest(clock, "team", "project", "main")
		first.DeliveryID = "d1"
		accept(t, s, clock, first, first.IdempotencyKey())
		clock.Advance(time.Second)
		older := waiting(t, s, clock, "project", "main", nil)
		retry := waiting(t, s, clock, "project", "main", func(r *build.Record) { r.RetryOf = older.BuildID })
		again := newRequest(clock, "team", "project", "main")
		again.DeliveryID = "d1"
		if owner, superseded := accept(t, s, clock, again, again.IdempotencyKey()); owner != first.BuildID || len(superseded) != 0 {
			t.Errorf("EnqueueSuperseding() of a redelivery = %s, %v; want %s and nothing superseded", owner, superseded, first.BuildID)
		}
		clock.Advance(time.Second)
		rebuild := newRequest(clock, "team", "project", "main")
		rebuild.Trigger, rebuild.RebuildOf = build.TriggerManual, older.BuildID
		if _, superseded := accept(t, s, clock, rebuild); len(superseded) != 0 {
			t.Errorf("a rebuild superseded %v, want nothing", superseded)
		}
		unchanged(t, s, older, retry)
		// A newer retry or rebuild does not end a new request either:
		// it ends the older ones, retry and rebuild among them.
		clock.Advance(time.Second)
		req := newRequest(clock, "team", "project", "main")
		_, superseded := accept(t, s, clock, req)
		firstRec, _ := s.Records.Get(t.Context(), first.BuildID)
		rebuildRec, _ := s.Records.Get(t.Context(), rebuild.BuildID)
		if want := []build.ID{first.BuildID, older.BuildID, retry.BuildID, rebuild.BuildID}; !slices.Equal(superseded, want) {
			t.Errorf("superseded %v, want %v", superseded, want)
		}
		endedBy(t, s, req.BuildID, clock.Now(), firstRec, older, retry, rebuildRec)
	})

	t.Run("the outcomes of supersede.Older", func(t *testing.T) {
		t.Parallel()
		// Lock keys (a project each) of up to six records of every kind,
		// some queued at the same time (ordered by build ID then) and some
		// after the new request, saved alike into two stores: one accepts
		// the request with EnqueueSuperseding, the other with Enqueue and
		// then supersede.Older for a policy of Queued only.
		rng := rand.New(rand.NewPCG(15, 6))
		clock := NewClock(time.Time{})
		combined, composed := newStores(t, clock), newStores(t, clock)
		total, selfEnded := 0, 0
		for round := range 40 {
			project := fmt.Sprintf("p%d", round)
			clock.Advance(time.Hour)
			req := newRequest(clock, "team", project, "main")
			var recs []build.Record
			for range rng.IntN(7) {
				at := clock.Now().Add(time.Duration(rng.IntN(5)-2) * time.Second)
				r := build.RecordFor(newRequest(NewClock(at), "team", project, "main"))
				switch rng.IntN(7) {
				case 1:
					_ = r.Defer(at, at.Add(time.Minute), "busy")
				case 2:
					_ = r.Launching(at, 0, true)
				case 3:
					_ = r.Launching(at, 0, true)
					_ = r.Start(at, "pod", "")
				case 4:
					r.RebuildOf = build.NewID(at)
				case 5:
					r.RetryOf = build.NewID(at)
				case 6:
					_ = r.Supersede(at, build.NewID(at))
				}
				recs = append(recs, r)
			}
			for _, st := range []IntakeStores{combined, composed} {
				for _, r := range recs {
					if err := st.Records.Save(t.Context(), r); err != nil {
						t.Fatalf("round %d: Save(%s) error = %v", round, r.BuildID, err)
					}
				}
			}
			now := clock.Now().Add(time.Minute)
			_, superseded, err := combined.Intake.EnqueueSuperseding(t.Context(), req, nil, ttl, now)
			if err != nil {
				t.Fatalf("round %d: EnqueueSuperseding() error = %v", round, err)
			}
			if _, err := composed.Intake.Enqueue(t.Context(), req, nil, ttl); err != nil {
				t.Fatalf("round %d: Enqueue() error = %v", round, err)
			}
			res, err := supersede.Older(t.Context(), composed.Records, build.RecordFor(req), build.SupersedePolicy{Queued: true}, now)
			if err != nil {
				t.Fatalf("round %d: supersede.Older() error = %v", round, err)
			}
			total += len(superseded)
			if slices.Contains(superseded, req.BuildID) {
				selfEnded++
			}
			if !slices.Equal(superseded, res.Superseded) {
				t.Errorf("round %d: superseded %v, supersede.Older %v", round, superseded, res.Superseded)
			}
			ids := []build.ID{req.BuildID}
			for _, r := range recs {
				ids = append(ids, r.BuildID)
			}
			for _, id := range ids {
				got, err1 := combined.Records.Get(t.Context(), id)
				want, err2 := composed.Records.Get(t.Context(), id)
				if err1 != nil || err2 != nil {
					t.Fatalf("round %d: Get(%s) errors %v, %v", round, id, err1, err2)
				}
				if got.Status != want.Status || got.SupersededBy != want.SupersededBy || !got.FinishedAt.Equal(want.FinishedAt) {
					t.Errorf("round %d: record %s = %s by %q at %v; supersede.Older left it %s by %q at %v",
						round, id, got.Status, got.SupersededBy, got.FinishedAt, want.Status, want.SupersededBy, want.FinishedAt)
				}
			}
		}
		if total == 0 || selfEnded == 0 {
			t.Fatalf("the rounds superseded %d requests, %d of them the new one: they test too little", total, selfEnded)
		}
	})
}

// intakeMessages returns the build IDs of the messages waiting, deleting
// them.
func intakeMessages(t *testing.T, s IntakeStores) []build.ID {
	t.Helper()
	var ids []build.ID
	for {
		msgs, err := s.Queue.Receive(t.Context(), 10, 0)
		if err != nil {
			t.Fatalf("Receive() error = %v", err)
		}
		if len(msgs) == 0 {
			return ids
		}
		for _, m := range msgs {
			req, err := build.Decode(m.Body)
			if err != nil {
				t.Fatalf("a message that is no request: %v", err)
			}
			ids = append(ids, req.BuildID)
			if err := s.Queue.Delete(t.Context(), m.Receipt); err != nil {
				t.Fatalf("Delete() error = %v", err)
			}
		}
	}
}
