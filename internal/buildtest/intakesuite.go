package buildtest

import (
	"errors"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
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
	// messages returns the build IDs of the messages waiting.
	messages := func(t *testing.T, s IntakeStores) []build.ID {
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
		if got := messages(t, s); len(got) != 1 || got[0] != req.BuildID {
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
		if got := messages(t, s); len(got) != 1 || got[0] != first.BuildID {
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
		if got := messages(t, s); len(got) != 0 {
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
		if got := messages(t, s); len(got) != 1 || got[0] != req.BuildID {
			t.Errorf("messages %v, want [%s]", got, req.BuildID)
		}
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
		if got := messages(t, s); len(got) != 0 {
			t.Errorf("messages %v, want none", got)
		}
	})
}
