package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// prepared reports whether the write connection keeps query prepared.
func (db *DB) prepared(query string) bool {
	db.stmts.mu.Lock()
	defer db.stmts.mu.Unlock()
	return db.stmts.ready[query] != nil
}

// TestWritesRunPreparedStatements: a statement a write ran is prepared
// once the write is done, and the next write runs it prepared, alone and
// in a batch, with its own arguments; a text of several statements is
// never prepared, and no more than maxPrepared are kept.
func TestWritesRunPreparedStatements(t *testing.T) {
	db := openTestDB(t)
	const insert = `INSERT INTO t (k, v) VALUES (?, ?)`
	exec := func(query string, args ...any) {
		t.Helper()
		if err := db.write(t.Context(), func(tx *Tx) error {
			_, err := tx.ExecContext(t.Context(), query, args...)
			return err
		}); err != nil {
			t.Fatalf("write %q: %v", query, err)
		}
	}
	exec(insert, 1, "one")
	if !db.prepared(insert) {
		t.Fatalf("after a write, %q is not prepared", insert)
	}
	exec(insert, 2, "two")
	// A batch: two writes in one transaction, each through the statement.
	done := make(chan error, 2)
	for k := 3; k <= 4; k++ {
		go func() {
			done <- db.write(t.Context(), func(tx *Tx) error {
				_, err := tx.ExecContext(t.Context(), insert, k, fmt.Sprint("v", k))
				return err
			})
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if err := db.write(t.Context(), func(tx *Tx) error {
		rows, err := tx.QueryContext(t.Context(), `SELECT v FROM t ORDER BY k`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				return err
			}
			got = append(got, v)
		}
		return rows.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[one two v3 v4]" {
		t.Errorf("rows %v, want [one two v3 v4]", got)
	}

	const two = `INSERT INTO t (k, v) VALUES (10, 'a'); INSERT INTO t (k, v) VALUES (11, 'b')`
	exec(two)
	exec(`DELETE FROM t WHERE k >= 10`)
	if db.prepared(two) {
		t.Errorf("a text of two statements was prepared")
	}
	for i := range maxPrepared + 10 {
		exec(fmt.Sprintf(`UPDATE t SET v = v WHERE k = %d`, i))
	}
	if n := len(db.stmts.ready); n > maxPrepared {
		t.Errorf("%d statements kept, want at most %d", n, maxPrepared)
	}
}

// TestPreparedStatementsFollowSchemaChanges: another process changes the
// schema (a newer version's migration) after a statement was prepared;
// the statement runs against the new schema.
func TestPreparedStatementsFollowSchemaChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.write(t.Context(), func(tx *Tx) error {
		_, err := tx.ExecContext(t.Context(), `CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO t (k, v) VALUES (?, ?)`
	for k := range 2 {
		if err := db.write(t.Context(), func(tx *Tx) error {
			_, err := tx.ExecContext(t.Context(), insert, k, "x")
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !db.prepared(insert) {
		t.Fatal("insert not prepared")
	}
	other, err := sql.Open("sqlite", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Exec(`ALTER TABLE t ADD COLUMN w TEXT NOT NULL DEFAULT 'new'`); err != nil {
		t.Fatal(err)
	}
	if err := db.write(t.Context(), func(tx *Tx) error {
		_, err := tx.ExecContext(t.Context(), insert, 5, "after")
		return err
	}); err != nil {
		t.Fatalf("prepared insert after another process's ALTER TABLE: %v", err)
	}
	var w string
	if err := db.rdb.QueryRow(`SELECT w FROM t WHERE k = 5`).Scan(&w); err != nil || w != "new" {
		t.Errorf("row written after the schema change: w = %q, %v; want new", w, err)
	}
}

// TestReadsRunPreparedStatements: a read through readStmts is prepared
// once, answers with each call's own arguments on every read connection
// (more at once than the pool holds), and a text that cannot be prepared
// runs plain and reports its error, keeping nothing.
func TestReadsRunPreparedStatements(t *testing.T) {
	db := openTestDB(t)
	for k := 1; k <= 3; k++ {
		if err := db.write(t.Context(), func(tx *Tx) error {
			_, err := tx.ExecContext(t.Context(), `INSERT INTO t (k, v) VALUES (?, ?)`, k, fmt.Sprint("v", k))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	const get = `SELECT v FROM t WHERE k = ?`
	errs := make(chan error, 24)
	for i := range cap(errs) {
		go func() {
			k := i%3 + 1
			var v string
			err := db.reads.queryRow(t.Context(), db.rdb, get, k).Scan(&v)
			if err == nil && v != fmt.Sprint("v", k) {
				err = fmt.Errorf("k %d read %q", k, v)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var v string
	if err := db.reads.queryRow(t.Context(), db.rdb, get, 4).Scan(&v); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("read of a missing row error = %v, want sql.ErrNoRows", err)
	}
	if err := db.reads.queryRow(t.Context(), db.rdb, `SELECT v FROM missing WHERE k = ?`, 1).Scan(&v); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Errorf("read of a missing table error = %v, want no such table", err)
	}
	db.reads.mu.Lock()
	defer db.reads.mu.Unlock()
	if len(db.reads.m) != 1 || db.reads.m[get] == nil {
		t.Errorf("prepared reads %v, want only %q", db.reads.m, get)
	}
}
