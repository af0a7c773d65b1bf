package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTestDB(t *testing.T) *DB {
	t.Helper()
	return openTestDBAt(t, filepath.Join(t.TempDir(), "decap.db"))
}

// openTestDBAt opens the database at path with a table t (k, v).
func openTestDBAt(t *testing.T, path string) *DB {
	t.Helper()
	db := openPlainDBAt(t, path)
	if err := db.write(t.Context(), func(tx *Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

// openPlainDBAt opens the database at path, closed when the test ends.
func openPlainDBAt(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConcurrentWritesCommitAloneOrTogether: many concurrent writes, some
// of which fail after writing; whatever batches the writer forms, exactly
// the writes that succeeded are in the table, each write sees the ones
// before it, and each caller learns its own outcome.
func TestConcurrentWritesCommitAloneOrTogether(t *testing.T) {
	db := openTestDB(t)
	errOdd := errors.New("odd keys fail after writing")
	const n = 400
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = db.write(context.Background(), func(tx *Tx) error {
				if _, err := tx.Exec(`INSERT INTO t (k, v) VALUES (?, ?)`, i, fmt.Sprint(i)); err != nil {
					return err
				}
				if i%2 == 1 {
					return errOdd
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%2 == 1; errors.Is(err, errOdd) != want || (!want && err != nil) {
			t.Errorf("write %d: error %v", i, err)
		}
	}
	var count, odd int
	if err := db.rdb.QueryRow(`SELECT COUNT(*), COUNT(CASE WHEN k % 2 = 1 THEN 1 END) FROM t`).Scan(&count, &odd); err != nil {
		t.Fatal(err)
	}
	if count != n/2 || odd != 0 {
		t.Errorf("table holds %d rows (%d odd), want the %d even ones only", count, odd, n/2)
	}

	// A write sees the writes committed or batched before it: a counter
	// incremented by concurrent writes ends exact.
	if err := db.write(t.Context(), func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO t (k, v) VALUES (-1, '0')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for range n {
		wg.Go(func() {
			if err := db.write(context.Background(), func(tx *Tx) error {
				_, err := tx.Exec(`UPDATE t SET v = CAST(v AS INTEGER) + 1 WHERE k = -1`)
				return err
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var v int
	if err := db.rdb.QueryRow(`SELECT CAST(v AS INTEGER) FROM t WHERE k = -1`).Scan(&v); err != nil || v != n {
		t.Errorf("counter = %d, %v; want %d", v, err, n)
	}
}

// TestAbandonedWriteNeverRuns: a caller whose context ends while its write
// waits behind another gets the context's error, and its write never runs.
func TestAbandonedWriteNeverRuns(t *testing.T) {
	db := openTestDB(t)
	started, release := make(chan struct{}), make(chan struct{})
	go db.write(context.Background(), func(tx *Tx) error {
		close(started)
		<-release
		return nil
	})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	err := db.write(ctx, func(tx *Tx) error {
		ran = true
		_, err := tx.Exec(`INSERT INTO t (k, v) VALUES (1, 'late')`)
		return err
	})
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write of a caller that gave up: %v, want DeadlineExceeded", err)
	}
	// The next write goes through the writer after the abandoned one.
	if err := db.write(t.Context(), func(*Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var count int
	if err := db.rdb.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&count); err != nil || count != 0 || ran {
		t.Errorf("abandoned write ran=%v, table rows %d (%v); want it never run", ran, count, err)
	}
}

// TestWriteAfterCloseFails: a write after Close fails at once.
func TestWriteAfterCloseFails(t *testing.T) {
	db := openTestDB(t)
	db.Close()
	if err := db.write(t.Context(), func(*Tx) error { return nil }); !errors.Is(err, errClosed) {
		t.Errorf("write after Close: %v, want errClosed", err)
	}
}

// BenchmarkConcurrentWrites measures small writes from 32 goroutines, as a
// dispatcher's workers make them; group commit shares one fsync among the
// writes waiting together.
func BenchmarkConcurrentWrites(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "decap.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.write(context.Background(), func(tx *Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)`)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16) // 32 goroutines on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := db.write(context.Background(), func(tx *Tx) error {
				_, err := tx.Exec(`INSERT INTO t (v) VALUES ('x')`)
				return err
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// holdWriteLock takes the write lock of the database at path on a
// connection of its own, as another process would, and returns its
// release.
func holdWriteLock(t *testing.T, path string) func() {
	t.Helper()
	other, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	tx, err := other.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Rollback(); err != nil {
			t.Error(err)
		}
	}
}

// TestWritesThatCameDuringALockWaitJoinIt: while the writer waits for
// another process's write lock, the writes that come meanwhile join the
// transaction that waited, instead of waiting for one more.
func TestWritesThatCameDuringALockWaitJoinIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openTestDBAt(t, path)
	release := holdWriteLock(t, path)
	before := db.WriteStats()
	insert := func(i int) error {
		return db.write(t.Context(), func(tx *Tx) error {
			_, err := tx.Exec(`INSERT INTO t (k, v) VALUES (?, 'x')`, i)
			return err
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := insert(0); err != nil {
			t.Error(err)
		}
	})
	for db.writeSince.Load() == 0 { // the first write has begun: the writer waits for the lock
		time.Sleep(time.Millisecond)
	}
	for i := 1; i <= 5; i++ {
		wg.Go(func() {
			if err := insert(i); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the five reach the writer meanwhile, however loaded the machine
	release()
	wg.Wait()
	st := db.WriteStats()
	if tx, w := st.Transactions-before.Transactions, st.Writes-before.Writes; tx != 1 || w != 6 {
		t.Errorf("six writes during one wait for the lock: %d writes in %d transactions, want 6 in 1", w, tx)
	}
}

// TestCloseEndsAWaitForTheLock: a write waiting for another process's
// write lock fails with errClosed when the database closes, without
// waiting out the busy timeout.
func TestCloseEndsAWaitForTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openTestDBAt(t, path)
	release := holdWriteLock(t, path)
	defer release()
	done := make(chan error, 1)
	go func() { done <- db.write(context.Background(), func(*Tx) error { return nil }) }()
	for db.writeSince.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	go db.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errClosed) {
			t.Errorf("a write waiting for the lock at Close: %v, want errClosed", err)
		}
	case <-time.After(DefaultBusyTimeout / 2):
		t.Fatalf("the write still waits for the lock %v after Close", DefaultBusyTimeout/2)
	}
}
