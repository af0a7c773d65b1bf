package sqlite_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/sqlite"
)

// TestCheckWritesFollowsAnotherProcessHoldingTheWriteLock: while another
// connection (another process, in production) holds the write lock, reads
// go on in WAL mode but every write fails once the busy timeout passes;
// CheckWrites then fails too, and recovers by itself when the lock is
// released.
func TestCheckWritesFollowsAnotherProcessHoldingTheWriteLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db, err := sqlite.Open(path, sqlite.Options{BusyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	q := sqlite.NewQueue(db, sqlite.QueueOptions{})
	req := func() build.Request {
		return build.Request{V: 1, BuildID: build.NewID(time.Now()), Team: "t", Project: "p", Ref: "main",
			RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: time.Now()}
	}
	if err := db.CheckWrites(ctx); err != nil {
		t.Fatalf("CheckWrites before any write: %v", err)
	}

	// _txlock=immediate: BEGIN IMMEDIATE takes the write lock at once.
	holder, err := sql.Open("sqlite", path+"?_busy_timeout=1000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Publish(ctx, req()); !errors.Is(err, build.ErrUnavailable) {
		t.Fatalf("Publish while another connection holds the write lock: got %v, want ErrUnavailable", err)
	}
	if _, err := q.Stats(ctx); err != nil {
		t.Errorf("Stats (a read) while the write lock is held: %v, want it to work (WAL)", err)
	}
	if err := db.CheckWrites(ctx); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("CheckWrites while the write lock is held: got %v, want ErrUnavailable", err)
	}

	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckWrites(ctx); err != nil {
		t.Errorf("CheckWrites once the lock is released: %v", err)
	}
	if err := q.Publish(ctx, req()); err != nil {
		t.Errorf("Publish once the lock is released: %v", err)
	}
}

// TestCheckWritesFailsWhileAWriteWaitsForTheLock: before a blocked write's
// busy timeout ends, CheckWrites already reports it once it has waited
// longer than SlowWrite.
func TestCheckWritesFailsWhileAWriteWaitsForTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	db, err := sqlite.Open(path, sqlite.Options{BusyTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	holder, err := sql.Open("sqlite", path+"?_busy_timeout=1000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		published <- sqlite.NewQueue(db, sqlite.QueueOptions{}).Publish(ctx, build.Request{V: 1, BuildID: build.NewID(time.Now()),
			Team: "t", Project: "p", Ref: "main", RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: time.Now()})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for db.CheckWrites(ctx) == nil {
		if time.Now().After(deadline) {
			t.Fatal("CheckWrites still nil 30 s into a write blocked on the lock")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := db.CheckWrites(ctx); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("CheckWrites: got %v, want ErrUnavailable", err)
	}
	tx.Rollback()
	if err := <-published; err != nil {
		t.Errorf("the blocked Publish, once the lock is free: %v", err)
	}
	if err := db.CheckWrites(ctx); err != nil {
		t.Errorf("CheckWrites after the write went through: %v", err)
	}
}
