package buildtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeSessions is an in-memory Sessions measured by an injected clock. It is
// safe for concurrent use.
type FakeSessions struct {
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]build.Session
}

// NewSessions returns a FakeSessions with no sessions, reading time from now.
func NewSessions(now func() time.Time) *FakeSessions {
	return &FakeSessions{now: now, sessions: map[string]build.Session{}}
}

// Create stores s unless an unexpired session has its key; see Sessions.
func (f *FakeSessions) Create(_ context.Context, s build.Session) error {
	if err := build.ValidateSession(s); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.sessions[s.Key]; ok && old.ExpiresAt.After(f.now()) {
		return fmt.Errorf("create session: %w: the key is taken", build.ErrConflict)
	}
	f.sessions[s.Key] = s
	return nil
}

// Get returns the unexpired session under key; build.ErrNotFound otherwise.
func (f *FakeSessions) Get(_ context.Context, key string) (build.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[key]
	if !ok || !s.ExpiresAt.After(f.now()) {
		return build.Session{}, fmt.Errorf("session: %w", build.ErrNotFound)
	}
	return s, nil
}

// Delete removes the session under key, if any.
func (f *FakeSessions) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sessions, key)
	return nil
}

// Keys returns the keys of the stored sessions, expired ones included: what
// a reader of the store would see.
func (f *FakeSessions) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.sessions))
	for k := range f.sessions {
		keys = append(keys, k)
	}
	return keys
}
