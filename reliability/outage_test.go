package reliability_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the test holds the services' database from outside

	"github.com/decap-ci/decap/internal/proctest"
)

// TestEmbeddedOutage makes the embedded store unavailable the way it fails
// in practice: another process (the test, here) holds SQLite's write lock,
// as an operator's long sqlite3 session or a stuck backup would, for the
// scale's outage time. Reads go on (WAL), every write waits out the busy
// timeout and fails; see runOutage for what must hold.
func TestEmbeddedOutage(t *testing.T) {
	requireSuite(t)
	r := newRow(t, "outage", "embedded (write lock held)")
	var (
		holder *sql.DB
		tx     *sql.Tx
	)
	runOutage(t, r, nil, "holding the SQLite write lock", func(c *proctest.Cluster) error {
		var err error
		// _txlock=immediate: BEGIN IMMEDIATE takes the write lock at once.
		holder, err = sql.Open("sqlite", filepath.Join(c.DataDir(), "decap.db")+"?_busy_timeout=30000&_txlock=immediate")
		if err != nil {
			return err
		}
		if tx, err = holder.BeginTx(context.Background(), nil); err != nil {
			holder.Close()
			return fmt.Errorf("take the write lock: %w", err)
		}
		return nil
	}, func() error {
		defer holder.Close()
		return tx.Rollback()
	})
}
