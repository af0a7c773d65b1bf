package buildtest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeLocks is an in-memory Locks measured by an injected clock. It is safe
// for concurrent use.
type FakeLocks struct {
	now func() time.Time

	mu      sync.Mutex
	leases  map[string]build.Lease
	waiters map[string]string // by key, of the current lease
}

// NewLocks returns a FakeLocks with no leases, reading time from now.
func NewLocks(now func() time.Time) *FakeLocks {
	return &FakeLocks{now: now, leases: map[string]build.Lease{}, waiters: map[string]string{}}
}

// Acquire takes l.Key and a slot of cap for l.BuildID; see Locks.
func (s *FakeLocks) Acquire(ctx context.Context, l build.Lease, cap int) error {
	if l.Key == "" || l.BuildID == "" {
		return fmt.Errorf("acquire lock %s: %w: empty key or build id", l.Key, build.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	take, err := s.acquireLocked(l, cap)
	if err != nil {
		return err
	}
	take()
	return nil
}

// acquireLocked decides Acquire with s.mu held: take makes the change,
// err (ErrLocked, ErrCapReached) says there is none to make.
func (s *FakeLocks) acquireLocked(l build.Lease, cap int) (take func(), err error) {
	now := s.now()
	if held, ok := s.leases[l.Key]; ok && held.ExpiresAt.After(now) {
		if held.BuildID != l.BuildID {
			return nil, fmt.Errorf("acquire lock %s: %w by build %s", l.Key, build.ErrLocked, held.BuildID)
		}
		return func() {
			held.ExpiresAt = later(held.ExpiresAt, l.ExpiresAt)
			s.leases[l.Key] = held
		}, nil
	}
	if cap > 0 {
		n := 0
		for _, held := range s.leases {
			if held.ExpiresAt.After(now) {
				n++
			}
		}
		if n >= cap {
			return nil, fmt.Errorf("acquire lock %s: %w (%d)", l.Key, build.ErrCapReached, cap)
		}
	}
	return func() {
		s.leases[l.Key] = l
		delete(s.waiters, l.Key) // a new lease; an earlier one's waiter went with it
	}, nil
}

// Extend moves the expiry of an unexpired lease held by id to until if that
// is later; see Locks.
func (s *FakeLocks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	extend, err := s.extendLocked(key, id, until)
	if err != nil {
		return err
	}
	extend()
	return nil
}

// extendLocked decides Extend with s.mu held, as acquireLocked does.
func (s *FakeLocks) extendLocked(key string, id build.ID, until time.Time) (extend func(), err error) {
	held, ok := s.leases[key]
	if !ok || held.BuildID != id || !held.ExpiresAt.After(s.now()) {
		return nil, fmt.Errorf("extend lock %s: %w for build %s", key, build.ErrNotFound, id)
	}
	return func() {
		held.ExpiresAt = later(held.ExpiresAt, until)
		s.leases[key] = held
	}, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Release drops key if id holds it and returns its waiter; see Locks.
func (s *FakeLocks) Release(ctx context.Context, key string, id build.ID) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releaseLocked(key, id)
}

// releaseLocked is Release with s.mu held.
func (s *FakeLocks) releaseLocked(key string, id build.ID) (string, error) {
	held, ok := s.leases[key]
	switch {
	case !ok:
		return "", nil
	case held.BuildID == id:
		waiter := s.waiters[key]
		delete(s.leases, key)
		delete(s.waiters, key)
		return waiter, nil
	case held.ExpiresAt.After(s.now()):
		return "", fmt.Errorf("release lock %s: %w: held by build %s", key, build.ErrConflict, held.BuildID)
	}
	// Another build's expired lease: free; its waiter waits for the key.
	waiter := s.waiters[key]
	delete(s.leases, key)
	delete(s.waiters, key)
	return waiter, nil
}

// Await records waiter on key's unexpired lease; see Locks.
func (s *FakeLocks) Await(ctx context.Context, key, waiter string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.leases[key]
	if !ok || !held.ExpiresAt.After(s.now()) {
		return fmt.Errorf("await lock %s: %w", key, build.ErrNotFound)
	}
	s.waiters[key] = waiter
	return nil
}

// ForceRelease drops key whoever holds it; see Locks.
func (s *FakeLocks) ForceRelease(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.leases[key]
	if ok {
		delete(s.leases, key)
		delete(s.waiters, key)
	}
	if !ok || !held.ExpiresAt.After(s.now()) {
		return fmt.Errorf("force-release lock %s: %w", key, build.ErrNotFound)
	}
	return nil
}

// List returns unexpired leases ordered by key.
func (s *FakeLocks) List(ctx context.Context) ([]build.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []build.Lease
	for _, l := range s.leases {
		if l.ExpiresAt.After(now) {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
