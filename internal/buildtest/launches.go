package buildtest

import (
	"context"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeLaunches is build.Launches over a FakeLocks, a FakeRecords and a
// FakeQueue: each call holds the three at once (always in that order), so
// it does all of its parts or none, as the embedded store's one write
// does. It is safe for concurrent use.
type FakeLaunches struct {
	Locks   *FakeLocks
	Records *FakeRecords
	Queue   *FakeQueue
}

// NewLaunches returns the launches of locks, records and q.
func NewLaunches(locks *FakeLocks, records *FakeRecords, q *FakeQueue) *FakeLaunches {
	return &FakeLaunches{Locks: locks, Records: records, Queue: q}
}

// Claim takes the lock and saves rec, or neither; see build.Launches.
func (s *FakeLaunches) Claim(ctx context.Context, l build.Lease, cap int, rec build.Record) error {
	if l.Key == "" || l.BuildID == "" || rec.BuildID != l.BuildID || !rec.Status.Valid() {
		return fmt.Errorf("claim the launch of %s: %w: empty key, build ids that differ, or unknown status %q", l.BuildID, build.ErrInvalid, rec.Status)
	}
	s.Locks.mu.Lock()
	defer s.Locks.mu.Unlock()
	s.Records.mu.Lock()
	defer s.Records.mu.Unlock()
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
func (s *FakeLaunches) Started(ctx context.Context, key string, until time.Time, rec build.Record, receipt string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Valid() {
		return false, fmt.Errorf("record the start of %s: %w: empty key or build id, or unknown status %q", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	s.Locks.mu.Lock()
	defer s.Locks.mu.Unlock()
	s.Records.mu.Lock()
	defer s.Records.mu.Unlock()
	s.Queue.mu.Lock()
	defer s.Queue.mu.Unlock()
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

// FakeEnds is build.Ends over a FakeLocks, a FakeRecords and a FakeQueue,
// holding the three at once as FakeLaunches does. It is safe for
// concurrent use.
type FakeEnds struct {
	Locks   *FakeLocks
	Records *FakeRecords
	Queue   *FakeQueue
}

// NewEnds returns the ends of locks, records and q.
func NewEnds(locks *FakeLocks, records *FakeRecords, q *FakeQueue) *FakeEnds {
	return &FakeEnds{Locks: locks, Records: records, Queue: q}
}

// Ended saves the final record, releases the lock and wakes its waiter,
// or does nothing; see build.Ends.
func (s *FakeEnds) Ended(ctx context.Context, rec build.Record, key string) (bool, error) {
	if key == "" || rec.BuildID == "" || !rec.Status.Final() {
		return false, fmt.Errorf("record the end of %s: %w: empty key or build id, or status %q not final", rec.BuildID, build.ErrInvalid, rec.Status)
	}
	s.Locks.mu.Lock()
	defer s.Locks.mu.Unlock()
	s.Records.mu.Lock()
	defer s.Records.mu.Unlock()
	s.Queue.mu.Lock()
	defer s.Queue.mu.Unlock()
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
