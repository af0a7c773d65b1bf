package buildtest

import (
	"sync"
	"time"
)

// Clock is a controllable clock for tests: it stands still until Advance
// moves it. It is safe for concurrent use; pass its Now method where an
// adapter takes now func() time.Time.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock showing start, or 2025-03-01 12:00 UTC when start
// is the zero time.
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	}
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
