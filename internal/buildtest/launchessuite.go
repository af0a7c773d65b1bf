package buildtest

import (
	"errors"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// LaunchesStores is a Launches and the ports it writes, over one store.
type LaunchesStores struct {
	Launches build.Launches
	Locks    Locks
	Records  Records
	Queue    Queue
}

// TestLaunches runs the Launches contract (build.Launches): each call does
// all of its parts or none. newStores must return empty stores that read
// time from clock. Subtests run in parallel.
func TestLaunches(t *testing.T, newStores func(t *testing.T, clock *Clock) LaunchesStores) {
	const lease, running = time.Minute, time.Hour
	// recorded records a waiting request.
	recorded := func(t *testing.T, s LaunchesStores, clock *Clock, ref string) (build.Request, build.Record) {
		t.Helper()
		req := newRequest(clock, "team", "project", ref)
		rec := build.RecordFor(req)
		if err := s.Records.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		return req, rec
	}
	// waiting records and publishes a request and receives its message.
	waiting := func(t *testing.T, s LaunchesStores, clock *Clock, ref string) (build.Record, build.Message) {
		t.Helper()
		req, rec := recorded(t, s, clock, ref)
		if err := s.Queue.Publish(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		for range 50 {
			msgs, err := s.Queue.Receive(t.Context(), 10, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if got, err := build.Decode(m.Body); err == nil && got.BuildID == req.BuildID {
					return rec, m
				}
			}
		}
		t.Fatalf("the message of %s never came", req.BuildID)
		return build.Record{}, build.Message{}
	}
	leaseOf := func(clock *Clock, rec build.Record, d time.Duration) build.Lease {
		now := clock.Now()
		return build.Lease{Key: rec.LockKey(), BuildID: rec.BuildID, Owner: "test", AcquiredAt: now, ExpiresAt: now.Add(d)}
	}
	claimed := func(t *testing.T, clock *Clock, rec build.Record) build.Record {
		t.Helper()
		if err := rec.Launching(clock.Now(), 1, true); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	get := func(t *testing.T, s LaunchesStores, id build.ID) build.Record {
		t.Helper()
		r, err := s.Records.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get(%s) error = %v", id, err)
		}
		return r
	}
	// heldUntil is when key's lease held by id expires; zero if it holds none.
	heldUntil := func(t *testing.T, s LaunchesStores, key string, id build.ID) time.Time {
		t.Helper()
		leases, err := s.Locks.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.Key == key && l.BuildID == id {
				return l.ExpiresAt
			}
		}
		return time.Time{}
	}
	// stillQueued fails unless m's message was left in the queue.
	stillQueued := func(t *testing.T, s LaunchesStores, m build.Message) {
		t.Helper()
		if err := s.Queue.Delete(t.Context(), m.Receipt); err != nil {
			t.Errorf("the message is gone: Delete() error = %v", err)
		}
	}

	t.Run("claim takes the lock and saves the claimed record", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, _ := waiting(t, s, clock, "main")
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, rec, lease), 0, claimed(t, clock, rec)); err != nil {
			t.Fatalf("Claim() error = %v", err)
		}
		if got := get(t, s, rec.BuildID); got.LaunchingAt.IsZero() || got.Status != build.StatusQueued || got.Number != 1 {
			t.Errorf("record %s #%d launching at %v; want queued #1 with its launch claim", got.Status, got.Number, got.LaunchingAt)
		}
		if until := heldUntil(t, s, rec.LockKey(), rec.BuildID); !until.Equal(clock.Now().Add(lease)) {
			t.Errorf("lease until %v, want %v", until, clock.Now().Add(lease))
		}
	})

	t.Run("claim refused by the lock or the cap writes nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		_, other := recorded(t, s, clock, "main")
		if err := s.Locks.Acquire(t.Context(), leaseOf(clock, other, lease), 0); err != nil {
			t.Fatal(err)
		}
		_, rec := recorded(t, s, clock, "main")
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, rec, lease), 0, claimed(t, clock, rec)); !errors.Is(err, build.ErrLocked) {
			t.Errorf("Claim() on a held key error = %v, want ErrLocked", err)
		}
		_, elsewhere := recorded(t, s, clock, "other")
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, elsewhere, lease), 1, claimed(t, clock, elsewhere)); !errors.Is(err, build.ErrCapReached) {
			t.Errorf("Claim() with the cap reached error = %v, want ErrCapReached", err)
		}
		for _, r := range []build.Record{rec, elsewhere} {
			if got := get(t, s, r.BuildID); !got.LaunchingAt.IsZero() {
				t.Errorf("record %s has a launch claim after a refused Claim()", r.BuildID)
			}
			if until := heldUntil(t, s, r.LockKey(), r.BuildID); !until.IsZero() {
				t.Errorf("%s holds %s until %v after a refused Claim()", r.BuildID, r.LockKey(), until)
			}
		}
	})

	t.Run("claim over an ended record takes no lock", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, _ := waiting(t, s, clock, "main")
		read := rec
		if err := rec.Cancel(clock.Now(), "someone"); err != nil {
			t.Fatal(err)
		}
		if err := s.Records.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, read, lease), 1, claimed(t, clock, read)); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Claim() over a cancelled record error = %v, want ErrConflict", err)
		}
		if got := get(t, s, rec.BuildID); got.Status != build.StatusCancelled {
			t.Errorf("record %s, want still cancelled", got.Status)
		}
		if until := heldUntil(t, s, rec.LockKey(), rec.BuildID); !until.IsZero() {
			t.Errorf("the key is held until %v after a Claim() that failed", until)
		}
		_, other := recorded(t, s, clock, "other")
		if err := s.Locks.Acquire(t.Context(), leaseOf(clock, other, lease), 1); err != nil {
			t.Errorf("the only slot is taken after a Claim() that failed: %v", err)
		}
	})

	t.Run("a failed claim leaves the holder's lease as it was", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, _ := waiting(t, s, clock, "main")
		if err := s.Locks.Acquire(t.Context(), leaseOf(clock, rec, lease), 0); err != nil {
			t.Fatal(err)
		}
		read := rec
		if err := rec.Cancel(clock.Now(), "someone"); err != nil {
			t.Fatal(err)
		}
		if err := s.Records.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, read, running), 0, claimed(t, clock, read)); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Claim() over a cancelled record error = %v, want ErrConflict", err)
		}
		if until := heldUntil(t, s, rec.LockKey(), rec.BuildID); !until.Equal(clock.Now().Add(lease)) {
			t.Errorf("lease until %v after a failed Claim(), want it as it was, %v", until, clock.Now().Add(lease))
		}
	})

	// launched returns a request claimed for its launch, its message, and
	// its record started.
	launched := func(t *testing.T, s LaunchesStores, clock *Clock) (build.Record, build.Message) {
		t.Helper()
		rec, m := waiting(t, s, clock, "main")
		rec = claimed(t, clock, rec)
		if err := s.Launches.Claim(t.Context(), leaseOf(clock, rec, lease), 0, rec); err != nil {
			t.Fatal(err)
		}
		if err := rec.Start(clock.Now(), rec.BuildID.PodName(), "c0ffee"); err != nil {
			t.Fatal(err)
		}
		return rec, m
	}

	t.Run("started extends the lease, records the start and deletes the message", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, m := launched(t, s, clock)
		until := clock.Now().Add(running)
		deleted, err := s.Launches.Started(t.Context(), rec.LockKey(), until, rec, m.Receipt)
		if err != nil || !deleted {
			t.Fatalf("Started() = %v, %v; want true, nil", deleted, err)
		}
		if got := get(t, s, rec.BuildID); got.Status != build.StatusRunning || got.PodName == "" {
			t.Errorf("record %s pod %q, want running with its pod", got.Status, got.PodName)
		}
		if got := heldUntil(t, s, rec.LockKey(), rec.BuildID); !got.Equal(until) {
			t.Errorf("lease until %v, want %v", got, until)
		}
		if err := s.Queue.Delete(t.Context(), m.Receipt); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete() after Started() error = %v, want ErrNotFound (deleted)", err)
		}
	})

	t.Run("started without the lease does nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, m := launched(t, s, clock)
		clock.Advance(lease + time.Second) // the launch lease runs out
		_, err := s.Launches.Started(t.Context(), rec.LockKey(), clock.Now().Add(running), rec, m.Receipt)
		if !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Started() after the lease ran out error = %v, want ErrNotFound", err)
		}
		if got := get(t, s, rec.BuildID); got.Status != build.StatusQueued {
			t.Errorf("record %s, want still queued", got.Status)
		}
		if until := heldUntil(t, s, rec.LockKey(), rec.BuildID); !until.IsZero() {
			t.Errorf("an expired lease came back, until %v", until)
		}
		stillQueued(t, s, m)
	})

	t.Run("started over an ended record does nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, m := launched(t, s, clock)
		cancelled := get(t, s, rec.BuildID)
		if err := cancelled.Cancel(clock.Now(), "someone"); err != nil {
			t.Fatal(err)
		}
		if err := s.Records.Save(t.Context(), cancelled); err != nil {
			t.Fatal(err)
		}
		_, err := s.Launches.Started(t.Context(), rec.LockKey(), clock.Now().Add(running), rec, m.Receipt)
		if !errors.Is(err, build.ErrConflict) {
			t.Errorf("Started() over a cancelled record error = %v, want ErrConflict", err)
		}
		if got := get(t, s, rec.BuildID); got.Status != build.StatusCancelled {
			t.Errorf("record %s, want still cancelled", got.Status)
		}
		if until := heldUntil(t, s, rec.LockKey(), rec.BuildID); !until.Equal(clock.Now().Add(lease)) {
			t.Errorf("lease until %v after a failed Started(), want the launch lease's %v", until, clock.Now().Add(lease))
		}
		stillQueued(t, s, m)
	})

	t.Run("started with a stale receipt records the start", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, m := launched(t, s, clock)
		if err := s.Queue.ChangeVisibility(t.Context(), m.Receipt, 0); err != nil {
			t.Fatal(err)
		}
		var again build.Message
		for range 50 {
			msgs, err := s.Queue.Receive(t.Context(), 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 1 {
				again = msgs[0]
				break
			}
		}
		if again.Receipt == "" || again.Receipt == m.Receipt {
			t.Fatalf("the message was not received again with a new receipt: %+v", again)
		}
		deleted, err := s.Launches.Started(t.Context(), rec.LockKey(), clock.Now().Add(running), rec, m.Receipt)
		if err != nil || deleted {
			t.Errorf("Started() with a stale receipt = %v, %v; want false, nil", deleted, err)
		}
		if got := get(t, s, rec.BuildID); got.Status != build.StatusRunning {
			t.Errorf("record %s, want running", got.Status)
		}
		stillQueued(t, s, again)
	})

	t.Run("bad input is refused", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newStores(t, clock)
		rec, m := waiting(t, s, clock, "main")
		other := newRequest(clock, "team", "project", "main").BuildID
		bad := leaseOf(clock, rec, lease)
		bad.BuildID = other
		if err := s.Launches.Claim(t.Context(), bad, 0, rec); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Claim() of another build's lease error = %v, want ErrInvalid", err)
		}
		if _, err := s.Launches.Started(t.Context(), "", clock.Now(), rec, m.Receipt); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Started() without a key error = %v, want ErrInvalid", err)
		}
		if until := heldUntil(t, s, rec.LockKey(), other); !until.IsZero() {
			t.Errorf("a refused Claim() took the key")
		}
		stillQueued(t, s, m)
	})
}
