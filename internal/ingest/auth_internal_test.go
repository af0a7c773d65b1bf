package ingest

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/buildtest"
)

// TestAuthThrottleIsBounded floods the throttle with failures from more
// addresses than it remembers: it never holds more than max clients,
// forgets idle ones first, and still blocks the client that keeps failing.
func TestAuthThrottleIsBounded(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	const max, limit = 100, 3
	th := newAuthThrottle(limit, time.Minute, time.Minute, max, clock.Now, slog.New(slog.DiscardHandler))

	for i := range limit {
		th.failed("203.0.113.1", "api token")
		if i < limit-1 && th.blocked("203.0.113.1") > 0 {
			t.Fatalf("blocked after %d failures, want after %d", i+1, limit)
		}
	}
	if th.blocked("203.0.113.1") <= 0 {
		t.Fatalf("not blocked after %d failures", limit)
	}
	for i := range 10 * max {
		th.failed(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "api token")
		if n := len(th.clients); n > max {
			t.Fatalf("after %d addresses the throttle holds %d clients, more than %d", i+1, n, max)
		}
	}

	// Once their window is over, idle clients make room and a blocked one
	// keeps its block.
	th = newAuthThrottle(limit, time.Minute, 10*time.Minute, max, clock.Now, slog.New(slog.DiscardHandler))
	for range limit {
		th.failed("203.0.113.1", "api token")
	}
	for i := range max - 1 {
		th.failed(fmt.Sprintf("10.0.0.%d", i), "api token")
	}
	clock.Advance(2 * time.Minute)
	th.failed("198.51.100.9", "api token")
	if _, ok := th.clients["10.0.0.0"]; ok || len(th.clients) != 2 {
		t.Errorf("after the window the throttle holds %d clients, want the blocked one and the new one", len(th.clients))
	}
	if th.blocked("203.0.113.1") <= 0 {
		t.Errorf("making room unblocked the blocked client")
	}
}

// A flood of failures from new addresses within the window, on a full
// table, forgets clients that are not blocked before one that is: else
// the flood would lift the blocks it is meant to keep.
func TestAuthThrottleKeepsBlocksUnderAFlood(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	const max, limit = 100, 3
	th := newAuthThrottle(limit, time.Minute, 10*time.Minute, max, clock.Now, slog.New(slog.DiscardHandler))
	for range limit {
		th.failed("203.0.113.1", "api token")
	}
	for i := range 10 * max {
		th.failed(fmt.Sprintf("2001:db8:%x::/64", i), "api token")
		if n := len(th.clients); n > max {
			t.Fatalf("after %d addresses the throttle holds %d clients, more than %d", i+1, n, max)
		}
	}
	if th.blocked("203.0.113.1") <= 0 {
		t.Errorf("a flood of %d new addresses within the window lifted a block", 10*max)
	}
}

// A failure from a new address on a full table, within the window, must
// not read the whole table each time: the table's lock is taken by every
// authentication.
func BenchmarkAuthThrottleFull(b *testing.B) {
	clock := buildtest.NewClock(time.Time{})
	th := newAuthThrottle(DefaultAuthFailureLimit, DefaultAuthFailureWindow, DefaultAuthBlock, DefaultAuthClients, clock.Now, slog.New(slog.DiscardHandler))
	for i := range DefaultAuthClients {
		th.failed(fmt.Sprintf("2001:db8:%x::/64", i), "api token")
	}
	b.ResetTimer()
	for i := range b.N {
		th.failed(fmt.Sprintf("2001:db9:%x::/64", i), "api token")
	}
}
