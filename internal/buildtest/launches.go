package buildtest

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeOneWrite is build.Launches and build.Ends over a FakeLocks, a
// FakeRecords and a FakeQueue: each call holds the three at once (always
// in that order), so it does all of its parts or none, as the embedded
// store's one write does. It is safe for concurrent use.
type FakeOneWrite struct {
	Locks   *FakeLocks
	Records *FakeRecords
	Queue   *FakeQueue
}

// NewOneWrite returns the combined writes of locks, records and q.
func NewOneWrite(locks *FakeLocks, records *FakeRecords, q *FakeQueue) *FakeOneWrite {
	return &FakeOneWrite{Locks: locks, Records: records, Queue: q}
}

// lock holds the three fakes, always in this order; it returns their
// unlock.
func (s *FakeOneWrite) lock() (unlock func()) {
	s.Locks.mu.Lock()
	s.Records.mu.Lock()
	s.Queue.mu.Lock()
	return func() {
		s.Queue.mu.Unlock()
		s.Records.mu.Unlock()
		s.Locks.mu.Unlock()
	}
}

// Claim takes the lock and saves rec, or neither; see build.Launches.
func (s *FakeOneWrite) Claim(ctx context.Context, l build.Lease, cap int, rec build.Record) error {
	if l.Key == "" || l.BuildID == "" || rec.BuildID != l.BuildID || !rec.Status.Valid() {
		return fmt.Errorf("claim the launch of %s: %w: empty key, build ids that differ, or unknown status %q", l.BuildID, build.ErrInvalid, rec.Status)
	}
	defer s.lock()()
	take, err := s.Locks.acquireLocked(l, cap)
	if err != nil {
		return fmt.Errorf("claim the launch of %s: %w", l.BuildID, err)
	}
	save, err := s.Records.saveLocked(rec)
	if err != nil {
		return fmt.Errorf("claim the launch of %s: %w", l.BuildID, err)
	}
	take()
	save()
	return nil
}

// Started extends the lease, saves rec and deletes the message, or does
// none of it; see build.Launches.
func (s *FakeOneWrite) Started(ctx context.Context, key string, until time.Time, rec build.Record, receipt string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Valid() {
		return false, fmt.Errorf("record the start of %s: %w: empty key or build id, or unknown status %q", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	defer s.lock()()
	extend, err := s.Locks.extendLocked(key, rec.BuildID, until)
	if err != nil {
		return false, fmt.Errorf("record the start of %s: %w", rec.BuildID, err)
	}
	save, err := s.Records.saveLocked(rec)
	if err != nil {
		return false, fmt.Errorf("record the start of %s: %w", rec.BuildID, err)
	}
	extend()
	save()
	i := s.Queue.findLocked(receipt)
	if i < 0 {
		return false, nil // received again: that delivery settles it
	}
	s.Queue.msgs = append(s.Queue.msgs[:i], s.Queue.msgs[i+1:]...)
	s.Queue.wakeLocked()
	return true, nil
}

// Ended saves the final record, releases the lock and wakes its waiter,
// or does nothing; see build.Ends.
func (s *FakeOneWrite) Ended(ctx context.Context, rec build.Record, key string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Final() {
		return false, fmt.Errorf("record the end of %s: %w: empty key or build id, or status %q not final", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	defer s.lock()()
	save, err := s.Records.saveLocked(rec)
	if err != nil {
		return false, fmt.Errorf("record the end of %s: %w", rec.BuildID, err)
	}
	save()
	waiter, err := s.Locks.releaseLocked(key, rec.BuildID)
	if err != nil {
		return false, nil // another build holds the key: left as it is
	}
	if waiter != "" {
		_ = s.Queue.changeVisibilityLocked(waiter, 0) // a stale receipt: nothing waits
	}
	return true, nil
}

// BothWays runs test twice, as a subtest each: with a service's writes
// combined (build.Launches, build.Ends: separate false) and in separate
// calls (separate true), as the two backends make them.
func BothWays(t *testing.T, test func(t *testing.T, separate bool)) {
	for _, separate := range []bool{false, true} {
		name := "combined"
		if separate {
			name = "separate"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, separate)
		})
	}
}

// Calls counts calls by name ("locks.acquire"), for tests that check
// which writes a service makes. It is safe for concurrent use.
type Calls struct {
	mu sync.Mutex
	n  map[string]int
}

// Inc counts a call of op.
func (c *Calls) Inc(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[op]++
}

// Counts returns the calls so far by name.
func (c *Calls) Counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}
