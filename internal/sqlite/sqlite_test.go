package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/sqlite"
)

// openDB opens a fresh database in a temporary directory, closed when the
// test ends.
func openDB(t *testing.T, clock *buildtest.Clock) *sqlite.DB {
	t.Helper()
	opts := sqlite.Options{}
	if clock != nil {
		opts.Now = clock.Now
	}
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "decap.db"), opts)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return db
}

func TestQueue(t *testing.T) {
	t.Parallel()
	buildtest.TestQueue(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Queue {
		return sqlite.NewQueue(openDB(t, clock), sqlite.QueueOptions{
			VisibilityTimeout: buildtest.SuiteVisibilityTimeout,
			RedriveLimit:      buildtest.SuiteRedriveLimit,
		})
	})
}

func TestLocks(t *testing.T) {
	t.Parallel()
	buildtest.TestLocks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Locks {
		return sqlite.NewLocks(openDB(t, clock))
	})
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	buildtest.TestIdempotency(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Idempotency {
		return sqlite.NewIdempotency(openDB(t, clock))
	})
}

func TestRecords(t *testing.T) {
	t.Parallel()
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return sqlite.NewRecords(openDB(t, nil))
	})
}
