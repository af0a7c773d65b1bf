package buildtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// TestLocks runs the Locks contract. newLocks must return a new store with no
// leases that reads time from clock. Subtests run in parallel.
func TestLocks(t *testing.T, newLocks func(t *testing.T, clock *Clock) Locks) {
	const (
		keyA = "ae6rt/dynamodb-lab/master"
		keyB = "ae6rt/dynamodb-lab/feature/x"
		keyC = "ae6rt/other/master"
		keyD = "team2/p/main"
	)

	t.Run("waiter", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		ctx := t.Context()
		if err := s.Await(ctx, keyA, "r0"); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Await() on a free key error = %v, want ErrNotFound", err)
		}
		l := newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 2)
		if w, err := s.Release(ctx, keyA, l.BuildID); err != nil || w != "" {
			t.Errorf("Release() without a waiter = %q, %v; want \"\", nil", w, err)
		}
		l = newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 2)
		for _, w := range []string{"r1", "r2"} {
			if err := s.Await(ctx, keyA, w); err != nil {
				t.Fatalf("Await(%s) error = %v", w, err)
			}
		}
		if w, err := s.Release(ctx, keyA, build.NewID(clock.Now())); !errors.Is(err, build.ErrConflict) || w != "" {
			t.Errorf("Release() by another build = %q, %v; want \"\", ErrConflict", w, err)
		}
		if err := s.Extend(ctx, keyA, l.BuildID, clock.Now().Add(2*time.Hour)); err != nil {
			t.Fatalf("Extend() error = %v", err)
		}
		if w, err := s.Release(ctx, keyA, l.BuildID); err != nil || w != "r2" {
			t.Errorf("Release() = %q, %v; want the last waiter \"r2\" (kept through a conflict and an Extend)", w, err)
		}
		if w, err := s.Release(ctx, keyA, l.BuildID); err != nil || w != "" {
			t.Errorf("a second Release() = %q, %v; want \"\", nil", w, err)
		}
		// A new lease starts without the old one's waiter.
		next := newLease(clock, keyA, time.Hour)
		acquire(t, s, next, 2)
		if w, err := s.Release(ctx, keyA, next.BuildID); err != nil || w != "" {
			t.Errorf("Release() of a new lease = %q, %v; want \"\", nil", w, err)
		}
		// An expired lease takes no waiter.
		old := newLease(clock, keyB, time.Minute)
		acquire(t, s, old, 2)
		clock.Advance(2 * time.Minute)
		if err := s.Await(ctx, keyB, "r3"); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Await() on an expired lease error = %v, want ErrNotFound", err)
		}
	})

	t.Run("acquire and release", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		l := newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 0)
		checkLeases(t, s, l)
		release(t, s, keyA, l.BuildID)
		checkLeases(t, s)
		if _, err := s.Release(t.Context(), keyA, l.BuildID); err != nil {
			t.Errorf("Release() of a free key error = %v, want nil", err)
		}
		other := newLease(clock, keyA, time.Hour)
		acquire(t, s, other, 0)
		checkLeases(t, s, other)
	})

	t.Run("another build gets ErrLocked", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		held := newLease(clock, keyA, time.Hour)
		acquire(t, s, held, 0)
		if err := s.Acquire(t.Context(), newLease(clock, keyA, time.Hour), 0); !errors.Is(err, build.ErrLocked) {
			t.Errorf("Acquire() of a held key error = %v, want ErrLocked", err)
		}
		checkLeases(t, s, held)
	})

	t.Run("same build re-acquires and extends", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		l := newLease(clock, keyA, time.Minute)
		acquire(t, s, l, 1)
		l.ExpiresAt = clock.Now().Add(10 * time.Minute)
		acquire(t, s, l, 1) // at the cap: its own slot counts
		clock.Advance(5 * time.Minute)
		checkLeases(t, s, l)
	})

	// Two replicas decide one message (its visibility lapsed): the second
	// re-acquires with the short launch lease while the first already gave
	// the running build its long lease. The later expiry stays, with its
	// slot.
	t.Run("same build re-acquires with an earlier expiry and keeps the later one", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		running := newLease(clock, keyA, 70*time.Minute)
		acquire(t, s, running, 1)
		again := running
		again.Owner, again.ExpiresAt = "dispatcher-1", clock.Now().Add(2*time.Minute)
		acquire(t, s, again, 1)
		clock.Advance(5 * time.Minute) // past the launch lease
		checkLeases(t, s, running)
		if err := s.Acquire(t.Context(), newLease(clock, keyA, time.Hour), 1); !errors.Is(err, build.ErrLocked) {
			t.Errorf("Acquire() by another build error = %v, want ErrLocked", err)
		}
		if err := s.Acquire(t.Context(), newLease(clock, keyB, time.Hour), 1); !errors.Is(err, build.ErrCapReached) {
			t.Errorf("Acquire() of another key at the cap error = %v, want ErrCapReached: the slot stays taken", err)
		}
	})

	t.Run("extend never shortens", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		ctx := t.Context()
		l := newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 1)
		if err := s.Extend(ctx, keyA, l.BuildID, clock.Now().Add(time.Minute)); err != nil {
			t.Fatalf("Extend() to an earlier expiry error = %v, want nil", err)
		}
		clock.Advance(5 * time.Minute) // past the earlier expiry
		checkLeases(t, s, l)
		if err := s.Acquire(ctx, newLease(clock, keyB, time.Hour), 1); !errors.Is(err, build.ErrCapReached) {
			t.Errorf("Acquire() of another key at the cap error = %v, want ErrCapReached: the slot stays taken", err)
		}
		// Later than the lease: it moves, and so does its slot.
		l.ExpiresAt = clock.Now().Add(2 * time.Hour)
		if err := s.Extend(ctx, keyA, l.BuildID, l.ExpiresAt); err != nil {
			t.Fatalf("Extend() error = %v", err)
		}
		clock.Advance(90 * time.Minute) // past the first expiry
		checkLeases(t, s, l)
		if err := s.Acquire(ctx, newLease(clock, keyB, time.Hour), 1); !errors.Is(err, build.ErrCapReached) {
			t.Errorf("Acquire() of another key at the cap error = %v, want ErrCapReached: the slot moved with the lease", err)
		}
		clock.Advance(time.Hour) // past the extended expiry
		checkLeases(t, s)
		if err := s.Extend(ctx, keyA, l.BuildID, clock.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Extend() of the expired lease error = %v, want ErrNotFound", err)
		}
		acquire(t, s, newLease(clock, keyB, time.Hour), 1) // its slot is free
	})

	t.Run("cap", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		a := newLease(clock, keyA, time.Hour)
		b := newLease(clock, keyB, time.Minute)
		acquire(t, s, a, 2)
		acquire(t, s, b, 2)
		c := newLease(clock, keyC, time.Hour)
		if err := s.Acquire(t.Context(), c, 2); !errors.Is(err, build.ErrCapReached) {
			t.Fatalf("Acquire() over the cap error = %v, want ErrCapReached", err)
		}
		checkLeases(t, s, b, a) // ordered by key: keyB < keyA
		acquire(t, s, c, 0)     // no cap
		release(t, s, keyC, c.BuildID)

		release(t, s, keyA, a.BuildID)
		acquire(t, s, c, 2) // a's slot is free
		d := newLease(clock, keyD, time.Hour)
		if err := s.Acquire(t.Context(), d, 2); !errors.Is(err, build.ErrCapReached) {
			t.Fatalf("Acquire() over the cap error = %v, want ErrCapReached", err)
		}
		clock.Advance(2 * time.Minute)
		d.AcquiredAt, d.ExpiresAt = clock.Now(), clock.Now().Add(time.Hour)
		acquire(t, s, d, 2) // b's lease expired, freeing its slot
		checkLeases(t, s, c, d)
	})

	t.Run("expired lease is taken by another build", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		old := newLease(clock, keyA, time.Minute)
		acquire(t, s, old, 1)
		clock.Advance(2 * time.Minute)
		checkLeases(t, s)
		taker := newLease(clock, keyA, time.Hour)
		acquire(t, s, taker, 1)
		checkLeases(t, s, taker)
		if err := s.Extend(t.Context(), keyA, old.BuildID, clock.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Extend() by the expired holder error = %v, want ErrNotFound", err)
		}
		if _, err := s.Release(t.Context(), keyA, old.BuildID); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Release() by the expired holder error = %v, want ErrConflict", err)
		}
		checkLeases(t, s, taker)
	})

	t.Run("release of an expired lease", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		l := newLease(clock, keyA, time.Minute)
		acquire(t, s, l, 0)
		clock.Advance(2 * time.Minute)
		if _, err := s.Release(t.Context(), keyA, build.NewID(clock.Now())); err != nil {
			t.Errorf("Release() by another build of an expired lease error = %v, want nil", err)
		}
		if _, err := s.Release(t.Context(), keyA, l.BuildID); err != nil {
			t.Errorf("Release() by the holder of an expired lease error = %v, want nil", err)
		}
		checkLeases(t, s)
	})

	t.Run("release by another build", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		l := newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 0)
		if _, err := s.Release(t.Context(), keyA, build.NewID(clock.Now())); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Release() by another build error = %v, want ErrConflict", err)
		}
		checkLeases(t, s, l)
	})

	t.Run("extend", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		ctx := t.Context()
		l := newLease(clock, keyA, time.Minute)
		acquire(t, s, l, 0)
		l.ExpiresAt = clock.Now().Add(10 * time.Minute)
		if err := s.Extend(ctx, keyA, l.BuildID, l.ExpiresAt); err != nil {
			t.Fatalf("Extend() error = %v", err)
		}
		clock.Advance(5 * time.Minute)
		checkLeases(t, s, l)

		cases := []struct {
			name string
			key  string
			id   build.ID
		}{
			{"another build", keyA, build.NewID(clock.Now())},
			{"free key", keyB, l.BuildID},
		}
		for _, tc := range cases {
			if err := s.Extend(ctx, tc.key, tc.id, clock.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
				t.Errorf("Extend() of %s error = %v, want ErrNotFound", tc.name, err)
			}
		}
		checkLeases(t, s, l)

		release(t, s, keyA, l.BuildID)
		if err := s.Extend(ctx, keyA, l.BuildID, clock.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Extend() of a released lease error = %v, want ErrNotFound", err)
		}
		checkLeases(t, s)

		expired := newLease(clock, keyB, time.Minute)
		acquire(t, s, expired, 0)
		clock.Advance(2 * time.Minute)
		if err := s.Extend(ctx, keyB, expired.BuildID, clock.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Extend() of an expired lease error = %v, want ErrNotFound", err)
		}
		checkLeases(t, s)
	})

	t.Run("force release", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		ctx := t.Context()
		l := newLease(clock, keyA, time.Hour)
		acquire(t, s, l, 1)
		if err := s.ForceRelease(ctx, keyA); err != nil {
			t.Fatalf("ForceRelease() error = %v", err)
		}
		checkLeases(t, s)
		if err := s.ForceRelease(ctx, keyA); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("ForceRelease() of a free key error = %v, want ErrNotFound", err)
		}
		other := newLease(clock, keyB, time.Minute)
		acquire(t, s, other, 1) // the slot is free again
		clock.Advance(2 * time.Minute)
		if err := s.ForceRelease(ctx, keyB); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("ForceRelease() of an expired lease error = %v, want ErrNotFound", err)
		}
	})

	t.Run("list is ordered by key and omits expired leases", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		d := newLease(clock, keyD, time.Hour)
		a := newLease(clock, keyA, time.Hour)
		c := newLease(clock, keyC, time.Minute)
		b := newLease(clock, keyB, time.Hour)
		for _, l := range []build.Lease{d, a, c, b} {
			acquire(t, s, l, 0)
		}
		checkLeases(t, s, b, a, c, d)
		clock.Advance(time.Minute)
		checkLeases(t, s, b, a, d)
	})

	t.Run("concurrent acquires keep the lock and the cap", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newLocks(t, clock)
		CheckConcurrentLocks(t, []Locks{s}, clock)
	})
}

// CheckConcurrentLocks has 8 goroutines, spread over stores (which share
// one backing store, e.g. two connections to one database), acquire and
// release leases on 5 keys with a cap of 3, and fails t if more than 3 leases
// or two holders of one key are ever held at once.
func CheckConcurrentLocks(t *testing.T, stores []Locks, clock *Clock) {
	t.Helper()
	const (
		workers = 8
		rounds  = 40
		limit   = 3
	)
	keys := []string{"t/p/a", "t/p/b", "t/p/c", "t/p/d", "t/p/e"}
	var (
		mu       sync.Mutex
		held     int
		holders  = map[string]int{}
		acquired int
		maxHeld  int
	)
	var wg sync.WaitGroup
	for w := range workers {
		s := stores[w%len(stores)]
		wg.Go(func() {
			for i := range rounds {
				key := keys[(w+i)%len(keys)]
				l := newLease(clock, key, time.Hour)
				l.Owner = fmt.Sprintf("worker-%d", w)
				err := s.Acquire(t.Context(), l, limit)
				if errors.Is(err, build.ErrLocked) || errors.Is(err, build.ErrCapReached) {
					continue
				}
				if err != nil {
					t.Errorf("Acquire() error = %v", err)
					return
				}
				mu.Lock()
				held++
				holders[key]++
				acquired++
				maxHeld = max(maxHeld, held)
				if held > limit {
					t.Errorf("%d leases held at once, cap is %d", held, limit)
				}
				if holders[key] > 1 {
					t.Errorf("%d holders of %s at once", holders[key], key)
				}
				mu.Unlock()
				// Hold the lease for a while, so that holds overlap.
				if _, err := s.List(t.Context()); err != nil {
					t.Errorf("List() error = %v", err)
				}
				time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Microsecond)
				// Count the release before it happens: a later Acquire of the
				// slot can only succeed after it.
				mu.Lock()
				held--
				holders[key]--
				mu.Unlock()
				if _, err := s.Release(t.Context(), key, l.BuildID); err != nil {
					t.Errorf("Release() error = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if acquired == 0 {
		t.Errorf("no Acquire succeeded")
	}
	t.Logf("%d acquires succeeded, at most %d leases held at once", acquired, maxHeld)
	for _, s := range stores {
		if leases, err := s.List(t.Context()); err != nil || len(leases) != 0 {
			t.Errorf("List() after all releases = %v, %v; want none", leases, err)
		}
	}
}

func newLease(clock *Clock, key string, ttl time.Duration) build.Lease {
	now := clock.Now()
	return build.Lease{
		Key:        key,
		BuildID:    build.NewID(now),
		Owner:      "dispatcher-0",
		AcquiredAt: now,
		ExpiresAt:  now.Add(ttl),
	}
}

func acquire(t *testing.T, s Locks, l build.Lease, cap int) {
	t.Helper()
	if err := s.Acquire(t.Context(), l, cap); err != nil {
		t.Fatalf("Acquire(%s, cap %d) error = %v", l.Key, cap, err)
	}
}

func release(t *testing.T, s Locks, key string, id build.ID) {
	t.Helper()
	if _, err := s.Release(t.Context(), key, id); err != nil {
		t.Fatalf("Release(%s) error = %v", key, err)
	}
}

func checkLeases(t *testing.T, s Locks, want ...build.Lease) {
	t.Helper()
	got, err := s.List(t.Context())
	if err != nil {
		t.Fatalf("List() error = %v", err)
	}
	if want == nil {
		want = []build.Lease{}
	}
	if got == nil {
		got = []build.Lease{}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List() (-want +got):\n%s", diff)
	}
}
