package sqlite

import (
	"fmt"
	"path/filepath"
	"sync"
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

// TestWriteStatsCountWritesAndWaits: WriteStats counts the transactions
// and the writes they ran, the time the write lock was held, and the time
// a write waited for another connection's lock.
func TestWriteStatsCountWritesAndWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openTestDBAt(t, path)
	ctx := t.Context()
	before := db.WriteStats()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := db.write(ctx, func(tx *Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO t (v) VALUES (?)`, fmt.Sprint(i))
				return err
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st := db.WriteStats()
	if st.Writes-before.Writes != 20 || st.Transactions <= before.Transactions || st.Transactions-before.Transactions > 20 {
		t.Errorf("after 20 writes: %d writes in %d transactions, want 20 in 1 to 20", st.Writes-before.Writes, st.Transactions-before.Transactions)
	}
	if st.LockHeld <= before.LockHeld || st.LockWait != before.LockWait {
		t.Errorf("lock held %v → %v, waited %v → %v: want it held longer and no wait", before.LockHeld, st.LockHeld, before.LockWait, st.LockWait)
	}

	// Another connection holds the write lock while a write waits for it.
	release := holdWriteLock(t, path)
	done := make(chan error, 1)
	go func() {
		done <- db.write(ctx, func(tx *Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (v) VALUES ('after')`)
			return err
		})
	}()
	for db.writeSince.Load() == 0 { // the write has begun
		time.Sleep(time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // it tries the lock meanwhile, however loaded the machine
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := db.WriteStats(); after.LockWait <= st.LockWait || after.Writes != st.Writes+1 {
		t.Errorf("a write that waited for another connection's lock: LockWait %v → %v, writes %d → %d", st.LockWait, after.LockWait, st.Writes, after.Writes)
	}
}
