package sqlite

import (
	"context"
	"path/filepath"
	"testing"
)

// TestWriteConnectionPragmas: the write connection syncs every commit
// (synchronous FULL). It keeps the group commit's savepoint sub-journal in
// memory (temp_store MEMORY), where it would otherwise become a temporary
// file written page by page, has no busy timeout of its own (beginWrite
// waits for the lock), and checkpoints the WAL every 4000 pages.
func TestWriteConnectionPragmas(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, p := range []struct {
		name string
		want int
		what string
	}{
		{"synchronous", 2, "FULL"},
		{"temp_store", 2, "MEMORY"},
		{"busy_timeout", 0, "beginWrite waits"},
		{"wal_autocheckpoint", 4000, "a checkpoint every 4000 pages, tuning 12"},
	} {
		var got int
		if err := db.wdb.QueryRowContext(context.Background(), "PRAGMA "+p.name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != p.want {
			t.Errorf("PRAGMA %s = %d on the write connection, want %d (%s)", p.name, got, p.want, p.what)
		}
	}
}
