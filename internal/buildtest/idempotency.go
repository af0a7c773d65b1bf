package buildtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeIdempotency is an in-memory Idempotency measured by an injected clock.
// It is safe for concurrent use.
type FakeIdempotency struct {
	now func() time.Time

	mu     sync.Mutex
	claims map[string]claim
}

type claim struct {
	id      build.ID
	expires time.Time
}

// NewIdempotency returns a FakeIdempotency with no claims, reading time from
// now.
func NewIdempotency(now func() time.Time) *FakeIdempotency {
	return &FakeIdempotency{now: now, claims: map[string]claim{}}
}

// Claim records that key belongs to id unless an unexpired claim exists, and
// returns the owner; see Idempotency.
func (s *FakeIdempotency) Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	if key == "" || id == "" || ttl <= 0 {
		return "", fmt.Errorf("claim %s: %w: empty key or build id, or ttl not positive", key, build.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if c, ok := s.claims[key]; ok && c.expires.After(now) {
		return c.id, nil
	}
	s.claims[key] = claim{id: id, expires: now.Add(ttl)}
	return id, nil
}
