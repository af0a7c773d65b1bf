package buildtest

import (
	"context"
	"fmt"
	"sort"

	"github.com/decap-ci/decap/internal/build"
)

// Unfinished returns the queued, deferred and running records of lock key
// key, oldest first; see Records. A malformed key gives ErrInvalid.
func (s *FakeRecords) Unfinished(ctx context.Context, key string) ([]build.Record, error) {
	if _, _, _, err := build.SplitLockKey(key); err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []build.Record{}
	for _, r := range s.records {
		if r.LockKey() == key && (r.Waiting() || r.Status == build.StatusRunning) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Older(out[j]) })
	return out, nil
}

// EndWaiting writes the final record r only if the stored one is queued or
// deferred and not being launched; see Records. It writes its event to the
// outbox.
func (s *FakeRecords) EndWaiting(ctx context.Context, r build.Record) error {
	if !r.Status.Final() {
		return fmt.Errorf("end waiting build %s: %w: status %q is not final", r.BuildID, build.ErrInvalid, r.Status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.records[r.BuildID]
	switch {
	case !ok:
		return fmt.Errorf("end waiting build %s: %w", r.BuildID, build.ErrNotFound)
	case !old.Waiting() || !old.LaunchingAt.IsZero():
		return fmt.Errorf("end waiting build %s: %w: stored status %s, launching since %v", r.BuildID, build.ErrConflict, old.Status, old.LaunchingAt)
	}
	r.Number = old.Number
	s.write(r)
	return nil
}
