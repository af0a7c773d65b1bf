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
