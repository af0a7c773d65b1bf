// Package sqlite is the embedded default's durable store: the build queue,
// branch locks with the concurrency cap, idempotency claims, build records
// and their event outbox (each change's event written in the change's
// transaction; Outbox, or the event stream itself when it takes the
// records' events: Stream.TakeRecordEvents), the dispatch gate and the
// UI's sessions in one SQLite database file (modernc.org/sqlite, pure Go).
//
// Several processes (dispatcher, ingest, reaper) may open the same file at
// once. The database runs in WAL mode; every read-modify-write runs in a
// BEGIN IMMEDIATE transaction, so writers are serialized across processes by
// SQLite's lock (waiting up to the busy timeout) and within a process by a
// one-connection write pool. A queue Receive that finds nothing sleeps until a
// wake-up: in-process through a channel, across processes through unix
// datagram sockets in a wake directory; see Options.WakeDir.
//
// The embedded build-event stream (Stream) is this package's own small
// watermill Publisher and build.EventStream over two tables, not
// watermill-sql: that adapter (github.com/ThreeDotsLabs/watermill-sql/v4)
// ships schema and offsets adapters for MySQL and PostgreSQL only, whose
// queries lock a group's offsets with SELECT … FOR UPDATE, which SQLite
// lacks; it would bring both servers' drivers in, run its own
// transactions outside this package's single writer and group commit, and
// poll. Stream drops a second publish by event ID, commits with the
// store's other writes, and wakes consumers in every process at once.
//
// Errors that mean the database could not be used (locked past the busy
// timeout, I/O failure, full disk) wrap build.ErrUnavailable.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultBusyTimeout is how long a statement waits for another connection's
// lock before failing with build.ErrUnavailable.
const DefaultBusyTimeout = 10 * time.Second

// Options configures Open. Zero fields take the defaults.
type Options struct {
	// Now is the clock for leases, visibility and expiry (default time.Now).
	Now func() time.Time
	// BusyTimeout bounds waits for locks held by other connections or
	// processes (default DefaultBusyTimeout).
	BusyTimeout time.Duration
	// WakeDir holds the unix datagram sockets through which processes
	// sharing the database wake each other's queue receivers (default: the
	// directory "wake" next to the database file). Every process opening
	// the database must use the same WakeDir.
	WakeDir string
	// ReadConns bounds the connections used for reads (default 4).
	ReadConns int
}

// DB is an open database. It is safe for concurrent use; Close it when done.
type DB struct {
	now func() time.Time
	// busyTimeout bounds beginWrite's wait for the write lock.
	busyTimeout time.Duration
	rdb         *sql.DB // reads; several connections
	wdb         *sql.DB // writes; one connection, BEGIN IMMEDIATE
	// stmts are wdb's prepared statements, reads rdb's (stmt.go).
	stmts *stmtCache
	reads readStmts
	wake  *waker
	// streamWake wakes the event stream's consumers and tails (Stream).
	streamWake *waker
	// written is closed and replaced when a write of this process put an
	// event in the outbox (Outbox.Pending waits on it).
	written *signal
	// toStream, when set, is the stream that the record changes' events go
	// to instead of the outbox (Stream.TakeRecordEvents).
	toStream atomic.Pointer[streamSink]
	// docs are the records last written or read, with their documents
	// (doccache.go).
	docs *docCache
	// eventSeqs are the outbox rows of the events this process's Pending
	// returned, for Forwarded.
	eventSeqs seqMemo
	// pdb probes whether the database can be written (CheckWrites).
	pdb *sql.DB
	// claimsPurge, dedupPurge and locksPurge pace the purges of expired
	// idempotency claims, queue dedup IDs and lock leases.
	claimsPurge, dedupPurge, locksPurge purger
	// writeSince is when the oldest write still running began (Unix
	// nanoseconds; 0: none): a write blocked on another process's lock
	// makes readiness drop before its busy timeout ends.
	writeSince atomic.Int64

	// stats counts the write transactions (WriteStats).
	stats writeCounters

	// The writer goroutine (batch.go): writes, its queue; stop ends it.
	writes chan *writeReq
	stop   chan struct{}
	// stopCtx ends when the writer stops (cancelStop).
	stopCtx    context.Context
	cancelStop context.CancelFunc
	stopped    chan struct{}
	stopOnce   sync.Once
}

// SlowWrite is how long a write may take before CheckWrites reports the
// database as not writable: writes are small, so one still waiting after
// this long waits for a lock that another process holds.
const SlowWrite = 2 * time.Second

// Open opens or creates the database file at path, configures it (WAL,
// busy timeout, foreign keys, synchronous=FULL) and brings its schema up to
// date. The directory must exist.
func Open(path string, opts Options) (*DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open database %q: %w: want a plain file path", path, build.ErrInvalid)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = DefaultBusyTimeout
	}
	if opts.WakeDir == "" {
		opts.WakeDir = filepath.Join(filepath.Dir(path), "wake")
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if err := restrictFiles(path); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	dsn := func(busyTimeout time.Duration) string {
		return path + "?" + strings.Join([]string{
			"_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10),
			// FULL: a request answered 202 survives a power loss, not only a crash.
			"_synchronous=FULL",
			"_foreign_keys=on",
			"_txlock=immediate",
			// The sub-journal of the group commit's savepoints (batch.go)
			// in memory: SQLite writes it to a temporary file once past
			// 64 KiB otherwise, a pwrite for every page a write first
			// touches (a quarter of ingest's writer, tuning 10).
			"_pragma=temp_store(MEMORY)",
			// A checkpoint once the WAL holds 4000 pages (~16 MiB), not
			// SQLite's 1000: a page that many commits rewrite is copied
			// into the database, and the database fsynced, a quarter as
			// often (ingest's lock time per webhook -12%, tuning 12).
			"_pragma=wal_autocheckpoint(4000)",
		}, "&")
	}
	// The write connection waits for the write lock in beginWrite, not in
	// SQLite's busy handler.
	wdb, err := sql.Open("sqlite", dsn(0))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	rdb, err := sql.Open("sqlite", dsn(opts.BusyTimeout))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	// The write probe waits at most a second for the lock: writes are
	// short, so a lock held longer is held by something stuck.
	pdb, err := sql.Open("sqlite", path+"?_busy_timeout=1000&_txlock=immediate")
	if err != nil {
		wdb.Close()
		rdb.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	pdb.SetMaxOpenConns(1)
	db := &DB{now: opts.Now, busyTimeout: opts.BusyTimeout, rdb: rdb, wdb: wdb, stmts: newStmtCache(), pdb: pdb, written: newSignal(),
		docs: newDocCache()}
	if err := db.useWAL(context.Background(), opts.BusyTimeout); err != nil {
		db.close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.startWriter()
	if err := db.migrate(context.Background()); err != nil {
		db.close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w, err := newWaker(opts.WakeDir)
	if err != nil {
		db.close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.wake = w
	// The event stream's consumers and tails wake apart from the queue's
	// receivers: a publish wakes only them (stream.go).
	sw, err := newWaker(filepath.Join(opts.WakeDir, "stream"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.streamWake = sw
	return db, nil
}

// Close stops wake-ups and closes the database. Calls in progress fail.
func (db *DB) Close() error {
	if db.wake != nil {
		db.wake.close()
	}
	if db.streamWake != nil {
		db.streamWake.close()
	}
	return db.close()
}

func (db *DB) close() error {
	db.stopWriter()
	db.stmts.close()
	db.reads.close()
	return errors.Join(db.wdb.Close(), db.rdb.Close(), db.pdb.Close())
}

// migrations returns the statements that bring the schema from version i to
// i+1. Append only: a released migration never changes.
func migrations() []string {
	return []string{schemaV1, schemaV2, schemaV3, schemaV4, schemaV5, schemaV6, schemaV7, schemaV8, schemaV9, schemaV10, schemaV11, schemaV12,
		schemaV13}
}

// schemaV1 is the first schema. Times are Unix nanoseconds.
const schemaV1 = `
CREATE TABLE queue_messages (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- publish order
	id            TEXT    NOT NULL UNIQUE,
	group_id      TEXT    NOT NULL,
	dedup_id      TEXT    NOT NULL,
	body          BLOB    NOT NULL,
	sent_at       INTEGER NOT NULL,
	visible_at    INTEGER NOT NULL, -- receivable from; for a received message its lease end
	receipt       TEXT    UNIQUE,   -- of the latest delivery; NULL before the first
	receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_messages_group ON queue_messages (group_id, seq);
CREATE INDEX queue_messages_visible ON queue_messages (visible_at);

CREATE TABLE queue_dead_letters (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	id            TEXT    NOT NULL,
	group_id      TEXT    NOT NULL,
	dedup_id      TEXT    NOT NULL,
	body          BLOB    NOT NULL,
	sent_at       INTEGER NOT NULL,
	receive_count INTEGER NOT NULL,
	reason        TEXT    NOT NULL,
	dead_at       INTEGER NOT NULL
);

CREATE TABLE queue_dedup (
	dedup_id   TEXT    PRIMARY KEY,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX queue_dedup_expires ON queue_dedup (expires_at);

CREATE TABLE locks (
	key         TEXT    PRIMARY KEY,
	build_id    TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	acquired_at INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX locks_expires ON locks (expires_at);

CREATE TABLE idempotency (
	key        TEXT    PRIMARY KEY,
	build_id   TEXT    NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_expires ON idempotency (expires_at);

CREATE TABLE records (
	id          TEXT    PRIMARY KEY,
	team        TEXT    NOT NULL,
	project     TEXT    NOT NULL,
	status      TEXT    NOT NULL,
	rank        INTEGER NOT NULL, -- build.Status.Rank
	queued_at   INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER,
	doc         BLOB    NOT NULL  -- the build.Record as JSON
) WITHOUT ROWID;
CREATE INDEX records_history ON records (team, project, queued_at, id);
CREATE INDEX records_running ON records (id) WHERE status = 'running';
`

// schemaV2 adds the dispatch gate (one row, absent until first set) and an
// index of the waiting records in the order Records.Waiting lists them.
const schemaV2 = `
CREATE TABLE dispatch_gate (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	paused INTEGER NOT NULL,
	reason TEXT    NOT NULL,
	set_by TEXT    NOT NULL,
	since  INTEGER NOT NULL
);
CREATE INDEX records_waiting ON records (queued_at, id) WHERE status IN ('queued', 'deferred');
`

// schemaV3 gives a lock its waiter: the receipt of the request deferred
// behind it (Locks.Await), which Release hands back.
const schemaV3 = `
ALTER TABLE locks ADD COLUMN waiter TEXT NOT NULL DEFAULT '';
`

// schemaV4 adds the UI's signed-in sessions (Sessions), keyed by the
// SHA-256 of the session ID.
const schemaV4 = `
CREATE TABLE sessions (
	key        TEXT    PRIMARY KEY,
	binding    TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expires ON sessions (expires_at);
`

// schemaV5 numbers builds per project (Records.Save): each record's number
// (0 for the records made before), and each project's last number given.
const schemaV5 = `
ALTER TABLE records ADD COLUMN number INTEGER NOT NULL DEFAULT 0;
CREATE TABLE project_numbers (
	team    TEXT    NOT NULL,
	project TEXT    NOT NULL,
	last    INTEGER NOT NULL,
	PRIMARY KEY (team, project)
) WITHOUT ROWID;
`

// schemaV6 indexes each project's unfinished records for
// Records.Unfinished (the requests a newer one of their lock key may
// supersede), so a supersede reads a project's queued, deferred and
// running records, not every waiting one.
const schemaV6 = `
CREATE INDEX records_unfinished ON records (team, project, queued_at, id) WHERE status IN ('queued', 'deferred', 'running');
`

// schemaV7 adds the pull requests Decap knows (PullRequests): one row per
// pull request, its entry as JSON, its version for the compare-and-swap,
// and whether it is open, indexed for a project's open pull requests.
const schemaV7 = `
CREATE TABLE pull_requests (
	team    TEXT    NOT NULL,
	project TEXT    NOT NULL,
	number  INTEGER NOT NULL,
	open    INTEGER NOT NULL,
	version INTEGER NOT NULL,
	doc     BLOB    NOT NULL, -- the build.PullRequestState as JSON
	PRIMARY KEY (team, project, number)
) WITHOUT ROWID;
CREATE INDEX pull_requests_open ON pull_requests (team, project, number) WHERE open = 1;
`

// schemaV8 adds the build-event outbox (Outbox, DESIGN.md "Build
// events"): each record's version, counting its changes (a record written
// before counts as version 1, its creation, whose event was never
// written), and the events of the changes not yet forwarded, in write
// order (seq: a rowid, always above every row present, so the order holds
// without AUTOINCREMENT's extra write), found by build and version when
// they are removed (until schemaV11).
const schemaV8 = `
ALTER TABLE records ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE TABLE record_events (
	seq      INTEGER PRIMARY KEY,
	build_id TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	type     TEXT    NOT NULL,
	at       INTEGER NOT NULL, -- when the change was written
	doc      BLOB    NOT NULL  -- the build.Record as the change left it, as JSON
);
CREATE UNIQUE INDEX record_events_build ON record_events (build_id, version);
`

// schemaV9 adds the embedded build-event stream (Stream): the events
// published, in publish order (seq, AUTOINCREMENT: a consumer group's
// position must never meet a number used again after a trim), one per
// event ID; and each consumer group's position (the seq of its next
// event) and the lease of the consumer that holds the group.
const schemaV9 = `
CREATE TABLE stream_events (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	id           TEXT    NOT NULL UNIQUE, -- the event ID: a second publish is dropped
	body         BLOB    NOT NULL,        -- the event as published (CloudEvents JSON)
	published_at INTEGER NOT NULL
);
CREATE INDEX stream_events_published ON stream_events (published_at);
CREATE TABLE stream_groups (
	name       TEXT    PRIMARY KEY,
	next_seq   INTEGER NOT NULL,
	holder     TEXT    NOT NULL DEFAULT '',
	held_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`

// schemaV11 drops the outbox's index of the events by build and version.
// A build's IDs are random within their millisecond, so each event written
// put an entry in a page of its own: one more page written per record
// change (a launch changes its record three times). Without it the write
// lock is held ~22% less per launched request (tuning 14). Forwarded finds
// the events it removes by the seq Pending read (Outbox).
const schemaV11 = `
DROP INDEX record_events_build;
`

// schemaV12 makes the records a rowid table. A record (its JSON document)
// is ~750 bytes; a WITHOUT ROWID table keeps whole rows in its interior
// pages too, so ~4 records fitted in a page at every level: a tree ~6
// levels deep, where a fifth of the records lived in interior pages and
// an update rebalanced pages up and down the tree (SQLite's documentation
// advises WITHOUT ROWID only for rows under ~1/20 of a page). The
// records' and the outbox's pages were 39 of the 43 pages a dispatcher's
// commit wrote (the quick drain's WAL, frames by page). Now a record's
// update rewrites its leaf, found through the index of IDs, which it
// leaves as it is (tuning 17).
//
// It also gives the index of unfinished records a column of its own
// (unfinished: 1 while the status is queued, deferred or running, as
// build.Status.Rank < 2): SQLite rewrites a partial index's entry on every
// UPDATE that sets a column its WHERE names, so a build's start (queued
// to running) and each deferral rewrote the entry though it stayed; now
// only the end, which sets unfinished to 0, removes it (tuning 18). The
// other indexes are made again as they were.
const schemaV12 = `
CREATE TABLE records_v12 (
	id          TEXT    PRIMARY KEY,
	team        TEXT    NOT NULL,
	project     TEXT    NOT NULL,
	status      TEXT    NOT NULL,
	rank        INTEGER NOT NULL, -- build.Status.Rank
	queued_at   INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER,
	doc         BLOB    NOT NULL, -- the build.Record as JSON
	number      INTEGER NOT NULL DEFAULT 0,
	version     INTEGER NOT NULL DEFAULT 1,
	unfinished  INTEGER NOT NULL          -- rank < 2, set only when it changes
);
INSERT INTO records_v12 (id, team, project, status, rank, queued_at, started_at, finished_at, doc, number, version, unfinished)
	SELECT id, team, project, status, rank, queued_at, started_at, finished_at, doc, number, version, rank < 2 FROM records
	ORDER BY queued_at, id;
DROP TABLE records;
ALTER TABLE records_v12 RENAME TO records;
CREATE INDEX records_history ON records (team, project, queued_at, id);
CREATE INDEX records_running ON records (id) WHERE status = 'running';
CREATE INDEX records_waiting ON records (queued_at, id) WHERE status IN ('queued', 'deferred');
CREATE INDEX records_unfinished ON records (team, project, queued_at, id) WHERE unfinished = 1;
`

// schemaV13 drops the stream's index of events by publish time. The
// record changes now write their events into the stream (tuning 25:
// Stream.TakeRecordEvents), so each change paid for that index's entry
// too; the trim, its only user, finds the old events by seq instead, as
// they were published in seq order.
const schemaV13 = `
DROP INDEX stream_events_published;
`

// useWAL puts the database file in WAL mode, which persists in the file.
// Switching a new file to WAL while another process does the same can fail
// with SQLITE_BUSY without SQLite waiting for the busy timeout, so useWAL
// retries for up to timeout itself.
func (db *DB) useWAL(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var mode string
		err := db.wdb.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("set journal mode: got %q, want wal", mode)
			}
			return nil
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("set journal mode: %w", classify(err))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// migrate applies the migrations the database lacks, in one transaction.
func (db *DB) migrate(ctx context.Context) error {
	return db.write(ctx, func(tx *Tx) error {
		steps := migrations()
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(steps) {
			return fmt.Errorf("%w: schema version %d is newer than this program's %d", build.ErrInvalid, v, len(steps))
		}
		for i := v; i < len(steps); i++ {
			if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
			}
		}
		if v < len(steps) {
			// PRAGMA takes no parameters; the value is an integer we made.
			if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(len(steps))); err != nil {
				return fmt.Errorf("set schema version: %w", err)
			}
		}
		return nil
	})
}

// write runs fn in a BEGIN IMMEDIATE transaction on the write connection and
// commits it if fn returns nil; concurrent writes share one commit (see
// batch.go). Errors from SQLite are classified (see classify); errors of fn
// are returned as they are. fn runs once, and must not call write itself.
func (db *DB) write(ctx context.Context, fn func(tx *Tx) error) error {
	if start := time.Now().UnixNano(); db.writeSince.CompareAndSwap(0, start) {
		defer db.writeSince.CompareAndSwap(start, 0)
	}
	return db.submit(ctx, fn)
}

// Waits for another process's write lock (beginWrite): the first retry
// after writeRetryFirst, each next one twice as long after the one before,
// at most writeRetryMax apart, and writeRetrySlow apart once the wait has
// lasted writeRetrySlowAfter.
const (
	writeRetryFirst     = 20 * time.Microsecond
	writeRetryMax       = time.Millisecond
	writeRetrySlowAfter = 250 * time.Millisecond
	writeRetrySlow      = 10 * time.Millisecond
)

// beginWrite starts a write transaction (BEGIN IMMEDIATE: it takes the
// write lock) on the write connection, and tells whether it waited for
// it. While another process holds the lock it tries again, for up to the
// busy timeout, and then fails with SQLite's SQLITE_BUSY (classify:
// build.ErrUnavailable); it gives up at once when ctx ends.
//
// SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between
// tries, where another process's write transaction holds the lock for a
// fraction of a millisecond: two processes writing at once (ingest and the
// dispatcher, the dispatcher and the reaper) spent most of their time
// asleep with the lock free. Here a waiter tries again within tens of
// microseconds at first and never more than a millisecond apart while the
// wait is short (docs/BENCHMARKS.md, tuning 2: the dispatcher drain's
// waits for the lock fell from 4.1 s to 2.9 s of its 5 s, its rate up
// ~35%).
func (db *DB) beginWrite(ctx context.Context) (*sql.Tx, bool, error) {
	var start time.Time
	var wait time.Duration
	for {
		tx, err := db.wdb.BeginTx(ctx, nil)
		if !isBusy(err) {
			if !start.IsZero() {
				db.stats.lockWait.Add(int64(time.Since(start)))
			}
			return tx, !start.IsZero(), err
		}
		now := time.Now()
		if start.IsZero() {
			start = now
		}
		waited := now.Sub(start)
		if waited >= db.busyTimeout {
			db.stats.lockWait.Add(int64(waited))
			return nil, true, err
		}
		wait = writeRetryAfter(wait, waited)
		t := time.NewTimer(min(wait, db.busyTimeout-waited))
		select {
		case <-ctx.Done():
			t.Stop()
			db.stats.lockWait.Add(int64(time.Since(start)))
			return nil, true, ctx.Err()
		case <-t.C:
		}
	}
}

// WriteStats counts a process's write transactions on the database since
// Open: the embedded store's one writer (group commit) and the waits for
// the write lock, which one process at a time holds.
type WriteStats struct {
	// Transactions is the write transactions begun (committed or not);
	// Writes the writes they ran: group commit runs several in one.
	Transactions, Writes int64
	// LockHeld is how long this process held the write lock, from
	// taking it to the end of the commit (its fsync included): the
	// share of the time its writes kept every other writer waiting. It
	// also counts the WAL checkpoints SQLite runs at the end of a commit
	// now and then, during which the lock is already free: two
	// processes' LockHeld may add up to a little more than the time.
	LockHeld time.Duration
	// LockWait is how long it waited for another process's write lock.
	LockWait time.Duration
}

// WriteStats returns the counts of this open's write transactions.
func (db *DB) WriteStats() WriteStats {
	return WriteStats{
		Transactions: db.stats.transactions.Load(), Writes: db.stats.writes.Load(),
		LockHeld: time.Duration(db.stats.lockHeld.Load()), LockWait: time.Duration(db.stats.lockWait.Load()),
	}
}

// writeCounters are WriteStats' counters.
type writeCounters struct {
	transactions, writes, lockHeld, lockWait atomic.Int64
}

// held counts a transaction of writes begun at since, ending now.
func (c *writeCounters) held(since time.Time, writes int) {
	c.transactions.Add(1)
	c.writes.Add(int64(writes))
	c.lockHeld.Add(int64(time.Since(since)))
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (any extended code):
// another connection holds the lock.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// writeRetryAfter is how long beginWrite sleeps before its next try, after
// sleeping prev before this one (0: none yet) and waiting waited in all.
func writeRetryAfter(prev, waited time.Duration) time.Duration {
	switch {
	case waited >= writeRetrySlowAfter:
		return writeRetrySlow
	case prev == 0:
		return writeRetryFirst
	default:
		return min(2*prev, writeRetryMax)
	}
}

// CheckWrites is a readiness check: nil when the database can be
// written. Reads go on in WAL mode while another process holds the write
// lock, so a read alone does not tell. It fails while one of this
// process's writes has waited longer than SlowWrite, and otherwise takes
// and drops the write lock on a connection of its own (BEGIN IMMEDIATE,
// ROLLBACK: nothing is written, nothing is synced), waiting at most a
// second for it. It recovers by itself once the lock is free.
func (db *DB) CheckWrites(ctx context.Context) error {
	if since := db.writeSince.Load(); since != 0 {
		if d := time.Since(time.Unix(0, since)); d > SlowWrite {
			return fmt.Errorf("database cannot be written: %w: a write has waited %s for the lock (another process holds it?)", build.ErrUnavailable, d.Round(time.Millisecond))
		}
	}
	tx, err := db.pdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("database cannot be written: %w", classify(err))
	}
	return tx.Rollback()
}

// unavailableError marks an SQLite error that means the database could not
// be used right now; it matches build.ErrUnavailable.
type unavailableError struct{ err error }

func (e unavailableError) Error() string        { return e.err.Error() }
func (e unavailableError) Unwrap() error        { return e.err }
func (e unavailableError) Is(target error) bool { return target == build.ErrUnavailable }

// classify marks SQLite errors that mean "the database is unusable for now"
// (busy or locked past the timeout, I/O errors, a full disk, a file that
// cannot be opened) with build.ErrUnavailable. Other errors pass unchanged.
func classify(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) || errors.Is(err, build.ErrUnavailable) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY:
		return unavailableError{err}
	}
	return err
}

// nanos stores a time as Unix nanoseconds; the zero time is 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos, in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// token returns a random 128-bit hex string for message IDs, receipts and
// socket names.
func token() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// ensureDir creates dir for this user only, or takes group and others'
// access away from one an older version created.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := restrictMode(dir, 0o700); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	return nil
}

// restrictFiles creates the database file for this user only (0600), and
// takes group and others' access away from the database, its -wal and its
// -shm if an older version created them readable. The database holds every
// build's record and the dispatch gate, which no build may read or change;
// SQLite gives the -wal and -shm files it creates the database file's
// mode, so they are 0600 too.
func restrictFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := restrictMode(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// restrictMode sets path's permissions to perm when it grants group or
// others anything.
func restrictMode(path string, perm fs.FileMode) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return os.Chmod(path, perm)
}

// Expired rows (idempotency claims, queue dedup IDs, lock leases) are
// purged as rows are written, up to purgePerWrite for each write: in one
// statement every purgeEvery-th write, which keeps pace with the writes
// (the table holds no more expired rows than writes can leave behind) at
// a fraction of a statement per write, where a purge per write cost the
// most of a claim.
const (
	purgeEvery    = 16
	purgePerWrite = 100
)

// purger counts a table's writes to say when a purge is due.
type purger struct{ n atomic.Uint64 }

// due reports whether this write purges, and how many rows at most: the
// first write of the process does, and every purgeEvery-th after it.
func (p *purger) due() (limit int, ok bool) {
	return purgeEvery * purgePerWrite, p.n.Add(1)%purgeEvery == 1
}
