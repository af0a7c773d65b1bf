package sqlite

import (
	"context"
	"path/filepath"
	"testing"
)

// TestWritesAreSynchronousFull: with WAL, synchronous=NORMAL may lose the
// last commits on power loss, and with them requests already answered 202.
func TestWritesAreSynchronousFull(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sync int
	if err := db.wdb.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != 2 {
		t.Errorf("PRAGMA synchronous = %d on the write connection, want 2 (FULL)", sync)
	}
}

// TestWriteConnectionKeepsItsSubJournalInMemory: the group commit's
// savepoints journal the pages each write first touches; with temp_store
// MEMORY that sub-journal never becomes a temporary file written page by
// page. The busy timeout is beginWrite's, not SQLite's.
func TestWriteConnectionKeepsItsSubJournalInMemory(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var store, busy int
	if err := db.wdb.QueryRowContext(context.Background(), "PRAGMA temp_store").Scan(&store); err != nil {
		t.Fatal(err)
	}
	if store != 2 {
		t.Errorf("PRAGMA temp_store = %d on the write connection, want 2 (MEMORY)", store)
	}
	if err := db.wdb.QueryRowContext(context.Background(), "PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if busy != 0 {
		t.Errorf("PRAGMA busy_timeout = %d on the write connection, want 0 (beginWrite waits)", busy)
	}
}
