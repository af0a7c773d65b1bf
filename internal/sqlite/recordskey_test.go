package sqlite

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/buildtest"
)

// TestSupersedeRacesLaunchAcrossOpens races supersedes against launches
// through two opens of one database file, as ingest and a dispatcher in
// two processes do.
func TestSupersedeRacesLaunchAcrossOpens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	open := func() *Records {
		db, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("Open() error = %v", err)
		}
		t.Cleanup(func() { db.Close() })
		return NewRecords(db)
	}
	buildtest.CheckSupersedeRacesLaunch(t, []buildtest.Records{open(), open()}, 40)
}

// TestUnfinishedUsesIndex checks that Unfinished reads the partial index
// of the project's unfinished records: a supersede costs a look at the
// project's waiting and running builds, never a scan of every record or
// every waiting one.
func TestUnfinishedUsesIndex(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "decap.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.rdb.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+unfinishedQuery, "t", "p", "main")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if got := strings.Join(plan, "; "); !strings.Contains(got, "USING INDEX records_unfinished") {
		t.Errorf("query plan of Unfinished = %q, want it to use records_unfinished", got)
	}
}
