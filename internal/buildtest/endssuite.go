package buildtest

import (
	"errors"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// EndsStores is an Ends and the ports it writes, over one store.
type EndsStores struct {
	Ends    build.Ends
	Locks   Locks
	Records Records
	Queue   Queue
}

// TestEnds runs the Ends contract (build.Ends): Ended does all of its
// parts or none. newStores must return empty stores that read time from
// clock. Subtests run in parallel.
func TestEnds(t *testing.T, newStores func(t *testing.T, clock *Clock) EndsStores) {
	const lease = time.Hour
	// running records a request of ref running under its lock.
	running := func(t *testing.T, s EndsStores, clock *Clock, ref string) build.Record {
		t.Helper()
		rec := build.RecordFor(newRequest(clock, "team", "project", ref))
		if err := rec.Start(clock.Now(), rec.BuildID.PodName(), "c0ffee"); err != nil {
			t.Fatal(err)
		}
		if err := s.Records.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		l := build.Lease{Key: rec.LockKey(), BuildID: rec.BuildID, Owner: "test", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(lease)}
		if err := s.Locks.Acquire(t.Context(), l, 0); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// deferred publishes the next request of rec's key, receives it,
	// defers it for an hour and leaves its receipt on rec's lease.
	deferred := func(t *testing.T, s EndsStores, clock *Clock, rec build.Record) build.Message {
		t.Helper()
		if err := s.Queue.Publish(t.Context(), newRequest(clock, rec.Team, rec.Project, rec.Ref)); err != nil {
			t.Fatal(err)
		}
		msgs, err := s.Queue.Receive(t.Context(), 1, time.Second)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Receive() = %d messages, %v", len(msgs), err)
		}
		if err := s.Queue.ChangeVisibility(t.Context(), msgs[0].Receipt, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.Locks.Await(t.Context(), rec.LockKey(), msgs[0].Receipt); err != nil {
			t.Fatal(err)
		}
		return msgs[0]
	}
	ended := func(t *testing.T, clock *Clock, rec build.Record) build.Record {
		t.Helper()
		if err := rec.End(build.Outcome{BuildID: rec.BuildID, Team: rec.Team, Project: rec.Project, Ref: rec.Ref,
			Status: build.StatusSucceeded, FinishedAt: clock.Now()}, clock.Now()); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	visible := func(t *testing.T, s EndsStores) int {
		t.Helper()
		msgs, err := s.Queue.Receive(t.Context(), 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs)
	}
	holder := func(t *testing.T, s EndsStores, key string) build.ID {
		t.Helper()
		leases, err := s.Locks.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.Key == key {
				return l.BuildID
			}
		}
		return ""
	}
	status := func(t *testing.T, s EndsStores, id build.ID) build.Status {
		t.Helper()
		r, err := s.Records.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}

	t.Run("ended records the end, frees the lock and wakes the waiting request", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec := running(t, s, clock, "main")
		deferred(t, s, clock, rec)
		released, err := s.Ends.Ended(t.Context(), ended(t, clock, rec), rec.LockKey())
		if err != nil || !released {
			t.Fatalf("Ended() = %v, %v; want true, nil", released, err)
		}
		if got := status(t, s, rec.BuildID); got != build.StatusSucceeded {
			t.Errorf("record %s, want succeeded", got)
		}
		if id := holder(t, s, rec.LockKey()); id != "" {
			t.Errorf("%s still held by %s", rec.LockKey(), id)
		}
		if n := visible(t, s); n != 1 {
			t.Errorf("%d messages receivable, want the deferred request's", n)
		}
	})

	t.Run("ended over a final record writes nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec := running(t, s, clock, "main")
		deferred(t, s, clock, rec)
		first := ended(t, clock, rec) // another reaper's
		first.Status = build.StatusFailed
		if err := s.Records.Save(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Ends.Ended(t.Context(), ended(t, clock, rec), rec.LockKey()); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Ended() over a final record error = %v, want ErrConflict", err)
		}
		if got := status(t, s, rec.BuildID); got != build.StatusFailed {
			t.Errorf("record %s, want still the first end's failed", got)
		}
		if id := holder(t, s, rec.LockKey()); id != rec.BuildID {
			t.Errorf("%s held by %q after a failed Ended(), want still %s", rec.LockKey(), id, rec.BuildID)
		}
		if n := visible(t, s); n != 0 {
			t.Errorf("%d messages receivable after a failed Ended(), want the deferred one still deferred", n)
		}
	})

	t.Run("a key another build took is left as it is", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec := running(t, s, clock, "main")
		clock.Advance(lease + time.Second)
		next := running(t, s, clock, "main")
		released, err := s.Ends.Ended(t.Context(), ended(t, clock, rec), rec.LockKey())
		if err != nil || released {
			t.Errorf("Ended() with the key taken = %v, %v; want false, nil", released, err)
		}
		if got := status(t, s, rec.BuildID); got != build.StatusSucceeded {
			t.Errorf("record %s, want succeeded", got)
		}
		if id := holder(t, s, rec.LockKey()); id != next.BuildID {
			t.Errorf("%s held by %q, want still %s", rec.LockKey(), id, next.BuildID)
		}
	})

	t.Run("a key nobody holds, or a stale waiter, is no error", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec := running(t, s, clock, "main")
		m := deferred(t, s, clock, rec)
		if err := s.Queue.Delete(t.Context(), m.Receipt); err != nil {
			t.Fatal(err)
		}
		if released, err := s.Ends.Ended(t.Context(), ended(t, clock, rec), rec.LockKey()); err != nil || !released {
			t.Errorf("Ended() with a stale waiter = %v, %v; want true, nil", released, err)
		}
		other := running(t, s, clock, "other")
		if _, err := s.Locks.Release(t.Context(), other.LockKey(), other.BuildID); err != nil {
			t.Fatal(err)
		}
		if released, err := s.Ends.Ended(t.Context(), ended(t, clock, other), other.LockKey()); err != nil || !released {
			t.Errorf("Ended() of a key nobody holds = %v, %v; want true, nil", released, err)
		}
	})

	t.Run("bad input is refused", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec := running(t, s, clock, "main")
		if _, err := s.Ends.Ended(t.Context(), rec, rec.LockKey()); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Ended() of a running record error = %v, want ErrInvalid", err)
		}
		if _, err := s.Ends.Ended(t.Context(), ended(t, clock, rec), ""); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Ended() without a key error = %v, want ErrInvalid", err)
		}
		if id := holder(t, s, rec.LockKey()); id != rec.BuildID {
			t.Errorf("%s held by %q after refused calls, want %s", rec.LockKey(), id, rec.BuildID)
		}
	})
}
