package sqlite

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestExpiredRowsArePurged checks that expired idempotency claims, queue
// dedup IDs and lock leases do not pile up though not every write purges:
// after purgeEvery writes, none of the expired rows (fewer than purgeEvery
// * purgePerWrite) is left.
func TestExpiredRowsArePurged(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	db, err := Open(filepath.Join(t.TempDir(), "decap.db"), Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	claims := NewIdempotency(db)
	q := NewQueue(db, QueueOptions{DedupWindow: time.Minute})
	locks := NewLocks(db)
	send := func(i int) {
		t.Helper()
		if err := q.SendRaw(t.Context(), fmt.Sprintf("g%d", i), fmt.Sprintf("dedup-%d", i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if _, err := claims.Claim(t.Context(), fmt.Sprintf("key-%d", i), build.NewID(clock()), time.Minute); err != nil {
			t.Fatal(err)
		}
		at := clock()
		l := build.Lease{Key: fmt.Sprintf("lock-%d", i), BuildID: build.NewID(at), Owner: "test", AcquiredAt: at, ExpiresAt: at.Add(time.Minute)}
		if err := locks.Acquire(t.Context(), l, 0); err != nil {
			t.Fatal(err)
		}
	}
	const old = 3 * purgeEvery
	for i := range old {
		send(i)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute) // every row so far expires
	mu.Unlock()
	expired := func(table string) int {
		t.Helper()
		var n int
		if err := db.rdb.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+table+` WHERE expires_at <= ?`, nanos(clock())).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, table := range []string{"idempotency", "locks"} {
		if got := expired(table); got != old {
			t.Fatalf("%d expired rows in %s before the purge, want %d", got, table, old)
		}
	}
	for i := range purgeEvery {
		send(old + i)
	}
	for _, table := range []string{"idempotency", "queue_dedup", "locks"} {
		if got := expired(table); got != 0 {
			t.Errorf("%d expired rows left in %s after %d writes", got, table, purgeEvery)
		}
	}
}
