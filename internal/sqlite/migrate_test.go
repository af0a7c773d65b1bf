package sqlite

import (
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// TestMigrateFromV1 opens a database file made by the first schema, with a
// waiting and a running record in it, and checks that Open upgrades it: the
// gate and Waiting work, and the data is kept.
func TestMigrateFromV1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	queued := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
	running := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "dev", Status: build.StatusRunning, QueuedAt: base}
	done := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "dev", Status: build.StatusSucceeded, QueuedAt: base.Add(-time.Minute)}

	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("sql.Open() error = %v", err)
	}
	if _, err := old.Exec(migrations()[0]); err != nil {
		t.Fatalf("create schema v1: %v", err)
	}
	if _, err := old.Exec("PRAGMA user_version = 1"); err != nil {
		t.Fatalf("set version 1: %v", err)
	}
	for _, r := range []build.Record{queued, running, done} {
		doc, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.Exec(`INSERT INTO records (id, team, project, status, rank, queued_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			string(r.BuildID), r.Team, r.Project, string(r.Status), r.Status.Rank(), nanos(r.QueuedAt), doc); err != nil {
			t.Fatalf("insert record: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open() of a version 1 database error = %v", err)
	}
	defer db.Close()
	var v int
	if err := db.rdb.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations()) {
		t.Errorf("user_version after Open = %d, %v; want %d", v, err, len(migrations()))
	}
	// Version 13 dropped the stream's index of publish times.
	var indexes int
	if err := db.rdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'stream_events_published'`).Scan(&indexes); err != nil || indexes != 0 {
		t.Errorf("stream_events_published after the upgrade: %d, %v; want dropped", indexes, err)
	}
	// Version 12 made the records a rowid table (a WITHOUT ROWID table
	// has no rowid column).
	var rowid int64
	if err := db.rdb.QueryRow(`SELECT rowid FROM records WHERE id = ?`, string(running.BuildID)).Scan(&rowid); err != nil {
		t.Errorf("records after the upgrade: no rowid: %v", err)
	}
	// Version 12 gave the unfinished records a column of their own.
	if got, err := NewRecords(db).Unfinished(t.Context(), running.LockKey()); err != nil || len(got) != 1 || got[0].BuildID != running.BuildID {
		t.Errorf("Unfinished(%s) after the upgrade = %v, %v; want only the running record", running.LockKey(), got, err)
	}
	waiting, _, err := NewRecords(db).Waiting(t.Context(), 0, 0)
	if err != nil {
		t.Fatalf("Waiting() error = %v", err)
	}
	if diff := cmp.Diff([]build.Record{queued}, waiting); diff != "" {
		t.Errorf("Waiting() after the upgrade (-want +got):\n%s", diff)
	}
	g := NewGate(db)
	if st, err := g.Get(t.Context()); err != nil || st.Paused {
		t.Errorf("Get() of the new gate = %+v, %v; want open", st, err)
	}
	if err := g.Set(t.Context(), build.GateState{Paused: true}); err != nil {
		t.Errorf("Set() error = %v", err)
	}
	// The records made before numbering keep number 0 through later
	// saves; the project's first new build is #1.
	records := NewRecords(db)
	next := queued
	next.Status, next.Reason = build.StatusDeferred, "branch busy"
	if err := records.Save(t.Context(), next); err != nil {
		t.Fatalf("Save() of an old record error = %v", err)
	}
	fresh := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
	if err := records.Save(t.Context(), fresh); err != nil {
		t.Fatalf("Save() of a new record error = %v", err)
	}
	for id, want := range map[build.ID]int{queued.BuildID: 0, running.BuildID: 0, done.BuildID: 0, fresh.BuildID: 1} {
		if got, err := records.Get(t.Context(), id); err != nil || got.Number != want {
			t.Errorf("Get(%s) after the upgrade = number %d, %v; want number %d", id, got.Number, err, want)
		}
	}
	sess := build.Session{Key: build.SessionKey("s"), Binding: "b", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := NewSessions(db).Create(t.Context(), sess); err != nil {
		t.Errorf("Sessions.Create() after the upgrade error = %v", err)
	}
}

// TestOpenRejectsNewerSchema checks that a program never opens a database
// that a newer version of it upgraded.
func TestOpenRejectsNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	if _, err := db.wdb.Exec("PRAGMA user_version = " + strconv.Itoa(len(migrations())+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := Open(path, Options{}); !errors.Is(err, build.ErrInvalid) {
		if db != nil {
			db.Close()
		}
		t.Errorf("Open() of a newer schema error = %v, want ErrInvalid", err)
	}
}
