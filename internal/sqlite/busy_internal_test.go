package sqlite

import (
	"testing"
	"time"
)

// TestWriteRetrySchedule: a write waiting for another process's write
// lock tries again within tens of microseconds, then twice as long after
// each try, never more than writeRetryMax apart while the wait is short,
// and writeRetrySlow apart once it has lasted writeRetrySlowAfter.
func TestWriteRetrySchedule(t *testing.T) {
	var got []time.Duration
	var prev, waited time.Duration
	for waited < writeRetrySlowAfter+3*writeRetrySlow {
		prev = writeRetryAfter(prev, waited)
		got = append(got, prev)
		waited += prev
	}
	if got[0] != writeRetryFirst || got[1] != 2*writeRetryFirst {
		t.Errorf("first sleeps %v, want %v then %v", got[:2], writeRetryFirst, 2*writeRetryFirst)
	}
	var short, slow int
	for i, d := range got {
		switch {
		case d == writeRetrySlow:
			slow++
		case d > writeRetryMax:
			t.Errorf("sleep %d is %v, above %v", i, d, writeRetryMax)
		case slow > 0:
			t.Errorf("sleep %d is %v after the slow sleeps began", i, d)
		case i > 0 && d < got[i-1]:
			t.Errorf("sleep %d is %v, shorter than the one before (%v)", i, d, got[i-1])
		default:
			short++
		}
	}
	// Up to writeRetrySlowAfter, a try about every writeRetryMax: some
	// 250 tries, not SQLite's dozen.
	if short < int(writeRetrySlowAfter/writeRetryMax) {
		t.Errorf("%d tries in the first %v, want at least %d", short, writeRetrySlowAfter, writeRetrySlowAfter/writeRetryMax)
	}
	if slow < 3 {
		t.Errorf("%d sleeps of %v after %v of waiting, want 3", slow, writeRetrySlow, writeRetrySlowAfter)
	}
}
