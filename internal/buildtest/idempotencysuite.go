package buildtest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestIdempotency runs the Idempotency contract. newIdempotency must return a
// new store with no claims that reads time from clock. Subtests run in
// parallel.
func TestIdempotency(t *testing.T, newIdempotency func(t *testing.T, clock *Clock) Idempotency) {
	const ttl = 7 * 24 * time.Hour

	t.Run("first claim wins until it expires", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newIdempotency(t, clock)
		first := build.NewID(clock.Now())
		second := build.NewID(clock.Now())
		third := build.NewID(clock.Now())
		steps := []struct {
			name    string
			advance time.Duration
			key     string
			id      build.ID
			want    build.ID
		}{
			{"new claim", 0, "delivery:d1", first, first},
			{"claim by another build", time.Hour, "delivery:d1", second, first},
			{"claim again by the owner", 0, "delivery:d1", first, first},
			{"other key", 0, "delivery:d2", second, second},
			{"just before expiry", ttl - time.Hour - time.Second, "delivery:d1", second, first},
			{"after expiry", 2 * time.Second, "delivery:d1", second, second},
			{"earlier owner after expiry", 0, "delivery:d1", first, second},
			{"unexpired other key", 0, "delivery:d2", third, second},
		}
		for _, st := range steps {
			clock.Advance(st.advance)
			got, err := s.Claim(t.Context(), st.key, st.id, ttl)
			if err != nil {
				t.Fatalf("%s: Claim() error = %v", st.name, err)
			}
			if got != st.want {
				t.Errorf("%s: Claim() = %s, want %s", st.name, got, st.want)
			}
		}
	})

	t.Run("concurrent claims agree on one owner", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		s := newIdempotency(t, clock)
		ids := make([]build.ID, 8)
		owners := make([]build.ID, len(ids))
		for i := range ids {
			ids[i] = build.NewID(clock.Now())
		}
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				owner, err := s.Claim(t.Context(), "build:b1", ids[i], ttl)
				if err != nil {
					t.Errorf("Claim() error = %v", err)
				}
				owners[i] = owner
			})
		}
		wg.Wait()
		for i, owner := range owners {
			if owner != owners[0] {
				t.Errorf("claim %d got owner %s, claim 0 got %s; want one owner", i, owner, owners[0])
			}
		}
		if !slices.Contains(ids, owners[0]) {
			t.Errorf("owner %s is none of the claiming builds", owners[0])
		}
	})
}
