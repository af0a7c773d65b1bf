package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
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

func TestIntake(t *testing.T) {
	t.Parallel()
	buildtest.TestIntake(t, func(t *testing.T, clock *buildtest.Clock) buildtest.IntakeStores {
		db := openDB(t, clock)
		q, claims, recs := sqlite.NewQueue(db, sqlite.QueueOptions{}), sqlite.NewIdempotency(db), sqlite.NewRecords(db)
		in, err := sqlite.NewIntake(q, claims, recs)
		if err != nil {
			t.Fatal(err)
		}
		return buildtest.IntakeStores{Intake: in, Idempotency: claims, Records: recs, Queue: q}
	})
}

// oneDB returns the locks, records and queue of a fresh database, which
// the combined writes (Launches, Ends) take.
func oneDB(t *testing.T, clock *buildtest.Clock) (*sqlite.Locks, *sqlite.Records, *sqlite.Queue) {
	t.Helper()
	db := openDB(t, clock)
	return sqlite.NewLocks(db), sqlite.NewRecords(db), sqlite.NewQueue(db, sqlite.QueueOptions{})
}

func TestLaunches(t *testing.T) {
	t.Parallel()
	buildtest.TestLaunches(t, func(t *testing.T, clock *buildtest.Clock) buildtest.LaunchesStores {
		locks, recs, q := oneDB(t, clock)
		l, err := sqlite.NewLaunches(locks, recs, q)
		if err != nil {
			t.Fatal(err)
		}
		return buildtest.LaunchesStores{Launches: l, Locks: locks, Records: recs, Queue: q}
	})
}

func TestEnds(t *testing.T) {
	t.Parallel()
	buildtest.TestEnds(t, func(t *testing.T, clock *buildtest.Clock) buildtest.EndsStores {
		locks, recs, q := oneDB(t, clock)
		e, err := sqlite.NewEnds(locks, recs, q)
		if err != nil {
			t.Fatal(err)
		}
		return buildtest.EndsStores{Ends: e, Locks: locks, Records: recs, Queue: q}
	})
}

// TestLaunchesOfTwoDatabases: launches over two databases would not write
// in one transaction; NewLaunches refuses it.
func TestLaunchesOfTwoDatabases(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	one, two := openDB(t, clock), openDB(t, clock)
	if _, err := sqlite.NewLaunches(sqlite.NewLocks(one), sqlite.NewRecords(two), sqlite.NewQueue(one, sqlite.QueueOptions{})); err == nil {
		t.Error("NewLaunches() of two databases: no error")
	}
}

// TestIntakeOfTwoDatabases: an intake over two databases would not write
// in one transaction; NewIntake refuses it.
func TestIntakeOfTwoDatabases(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	one, two := openDB(t, clock), openDB(t, clock)
	if _, err := sqlite.NewIntake(sqlite.NewQueue(one, sqlite.QueueOptions{}), sqlite.NewIdempotency(two), sqlite.NewRecords(one)); err == nil {
		t.Error("NewIntake() of two databases: no error")
	}
}

func TestRecords(t *testing.T) {
	t.Parallel()
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return sqlite.NewRecords(openDB(t, nil))
	})
}

// TestRecordSaveKeepsItsColumnsInStep: a save that changes a record's
// status updates only the columns that change; one that changes its queue
// time (no build does, but Save allows it) still moves it in the lists
// that order by it.
func TestRecordSaveKeepsItsColumnsInStep(t *testing.T) {
	t.Parallel()
	recs := sqlite.NewRecords(openDB(t, nil))
	ctx := t.Context()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rec := func(i int) build.Record {
		return build.RecordFor(build.Request{V: build.MessageVersion, BuildID: build.NewID(t0), Team: "t", Project: "p",
			Ref: "main", RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	a, b := rec(0), rec(1)
	for _, r := range []build.Record{a, b} {
		if err := recs.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(rs []build.Record) []build.ID {
		var out []build.ID
		for _, r := range rs {
			out = append(out, r.BuildID)
		}
		return out
	}
	a.QueuedAt = t0.Add(2 * time.Minute) // now the newer of the two
	if err := recs.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recs.Waiting(ctx, 0, 0); err != nil || !slices.Equal(ids(got), []build.ID{b.BuildID, a.BuildID}) {
		t.Errorf("Waiting() = %v, %v; want %v, %v (oldest first)", ids(got), err, b.BuildID, a.BuildID)
	}
	if got, _, err := recs.ListProject(ctx, "t", "p", 0, ""); err != nil || !slices.Equal(ids(got), []build.ID{a.BuildID, b.BuildID}) {
		t.Errorf("ListProject() = %v, %v; want %v, %v (newest first)", ids(got), err, a.BuildID, b.BuildID)
	}
	// A save that keeps the status (a launch claim) leaves it out of the
	// UPDATE: the record still waits, its document changed.
	if err := a.Launching(t0.Add(3*time.Minute), 2, true); err != nil {
		t.Fatal(err)
	}
	if err := recs.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recs.Waiting(ctx, 0, 0); err != nil || !slices.Equal(ids(got), []build.ID{b.BuildID, a.BuildID}) {
		t.Errorf("Waiting() after a's launch claim = %v, %v; want %v, %v", ids(got), err, b.BuildID, a.BuildID)
	}
	if got, err := recs.Get(ctx, a.BuildID); err != nil || got.Status != build.StatusQueued || !got.LaunchingAt.Equal(a.LaunchingAt) {
		t.Errorf("Get(a) after its launch claim = %s launching at %v, %v; want queued, launching at %v", got.Status, got.LaunchingAt, err, a.LaunchingAt)
	}
	if err := b.Start(t0.Add(3*time.Minute), "pod", "catalog"); err != nil {
		t.Fatal(err)
	}
	if err := recs.Save(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recs.Waiting(ctx, 0, 0); err != nil || !slices.Equal(ids(got), []build.ID{a.BuildID}) {
		t.Errorf("Waiting() after b started = %v, %v; want %v", ids(got), err, a.BuildID)
	}
	if got, err := recs.Running(ctx); err != nil || !slices.Equal(ids(got), []build.ID{b.BuildID}) {
		t.Errorf("Running() = %v, %v; want %v", ids(got), err, b.BuildID)
	}
	if got, err := recs.Get(ctx, b.BuildID); err != nil || got.Status != build.StatusRunning || got.Number != 2 {
		t.Errorf("Get(b) = %s #%d, %v; want running #2", got.Status, got.Number, err)
	}
	queued := b
	queued.Status, queued.StartedAt, queued.PodName = build.StatusQueued, time.Time{}, ""
	if err := recs.Save(ctx, queued); !errors.Is(err, build.ErrConflict) || !strings.Contains(err.Error(), "stored status running") {
		t.Errorf("Save() of a running build as queued: error = %v, want ErrConflict naming the stored status", err)
	}
}

// TestRecordsNumbersAcrossOpens numbers builds saved at once through two
// opens of one database file, as ingest and a dispatcher in two processes
// do.
func TestRecordsNumbersAcrossOpens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	buildtest.CheckConcurrentNumbers(t, []buildtest.Records{
		sqlite.NewRecords(openPath(t, path, sqlite.Options{})),
		sqlite.NewRecords(openPath(t, path, sqlite.Options{})),
	})
}

func TestSessions(t *testing.T) {
	t.Parallel()
	buildtest.TestSessions(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Sessions {
		return sqlite.NewSessions(openDB(t, clock))
	})
}

func TestGate(t *testing.T) {
	t.Parallel()
	buildtest.TestGate(t, func(t *testing.T) buildtest.Gate {
		return sqlite.NewGate(openDB(t, nil))
	})
}

// TestGateIsShared checks that every Open of one database file sees the
// gate, as dispatchers in other processes do, and that it outlives a
// restart.
func TestGateIsShared(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	ingest := sqlite.NewGate(openPath(t, path, sqlite.Options{}))
	dispatcher := sqlite.NewGate(openPath(t, path, sqlite.Options{}))
	paused := build.GateState{Paused: true, Reason: "maintenance", By: "ops", Since: time.Date(2025, time.March, 1, 12, 0, 0, 1, time.UTC)}
	if err := ingest.Set(t.Context(), paused); err != nil {
		t.Fatalf("Set() error = %v", err)
	}
	got, err := dispatcher.Get(t.Context())
	if err != nil {
		t.Fatalf("Get() from another Open error = %v", err)
	}
	if diff := cmp.Diff(paused, got); diff != "" {
		t.Errorf("Get() from another Open (-want +got):\n%s", diff)
	}

	db, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	got, err = sqlite.NewGate(openPath(t, path, sqlite.Options{})).Get(t.Context())
	if err != nil || !got.Paused {
		t.Errorf("Get() after reopening = %+v, %v; want paused", got, err)
	}
}

func TestSendRawAndDeadLetters(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	q := sqlite.NewQueue(openDB(t, clock), sqlite.QueueOptions{RedriveLimit: 1})
	ctx := t.Context()
	if err := q.SendRaw(ctx, "t/p/main", "", []byte("not json")); err != nil {
		t.Fatalf("SendRaw() error = %v", err)
	}
	if err := q.SendRaw(ctx, "t/p/dev", "", []byte("{}")); err != nil {
		t.Fatalf("SendRaw() error = %v", err)
	}
	msgs, err := q.Receive(ctx, 10, 0)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Receive() = %d messages, error %v; want 2", len(msgs), err)
	}
	if err := q.DeadLetter(ctx, msgs[0], "message is not a JSON request"); err != nil {
		t.Fatalf("DeadLetter() error = %v", err)
	}
	// The second message exceeds the redrive limit of 1 on its next receive.
	if err := q.ChangeVisibility(ctx, msgs[1].Receipt, 0); err != nil {
		t.Fatalf("ChangeVisibility() error = %v", err)
	}
	if again, err := q.Receive(ctx, 10, 0); err != nil || len(again) != 0 {
		t.Fatalf("Receive() past the redrive limit = %d messages, error %v; want none", len(again), err)
	}

	got, err := q.DeadLetters(ctx, 10)
	if err != nil {
		t.Fatalf("DeadLetters() error = %v", err)
	}
	want := []sqlite.DeadLetter{
		{
			Message: build.Message{ID: msgs[1].ID, GroupID: "t/p/dev", Body: []byte("{}"), ReceiveCount: 1, SentAt: clock.Now()},
			Reason:  "receive count 1 reached the redrive limit",
			DeadAt:  clock.Now(),
		},
		{
			Message: build.Message{ID: msgs[0].ID, GroupID: "t/p/main", Body: []byte("not json"), ReceiveCount: 1, SentAt: clock.Now()},
			Reason:  "message is not a JSON request",
			DeadAt:  clock.Now(),
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DeadLetters() (-want +got):\n%s", diff)
	}
}

func TestBusyDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openPath(t, path, sqlite.Options{Now: clock.Now, BusyTimeout: 100 * time.Millisecond})

	// Another process holds the write lock.
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("sql.Open() error = %v", err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatalf("Conn() error = %v", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE error = %v", err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")

	l := build.Lease{Key: "t/p/main", BuildID: build.NewID(clock.Now()), AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	err = sqlite.NewLocks(db).Acquire(t.Context(), l, 1)
	if !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Acquire() on a locked database error = %v, want ErrUnavailable", err)
	}
	// Reads go on in WAL mode.
	if _, err := sqlite.NewLocks(db).List(t.Context()); err != nil {
		t.Errorf("List() on a write-locked database error = %v", err)
	}
}

// TestWriteWaitEndsWithItsContext: a write waiting for another process's
// write lock gives up when its caller's context ends, long before the busy
// timeout, and the next write goes through once the lock is free.
func TestWriteWaitEndsWithItsContext(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openPath(t, path, sqlite.Options{BusyTimeout: time.Hour})
	holder, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	locks := sqlite.NewLocks(db)
	l := build.Lease{Key: "t/p/main", BuildID: build.NewID(time.Now()), AcquiredAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := locks.Acquire(ctx, l, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire() waiting for a held write lock, its context ended: error = %v, want DeadlineExceeded", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := locks.Acquire(t.Context(), l, 1); err != nil {
		t.Errorf("Acquire() once the lock is free: %v", err)
	}
}

// TestHeldClaimIsARead checks that a claim that holds is answered by a
// read (a dispatcher claims again what ingest claimed): it answers while
// another process holds the write lock, where a new claim cannot, and an
// expired claim is taken anew by a write.
func TestHeldClaimIsARead(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openPath(t, path, sqlite.Options{Now: clock.Now, BusyTimeout: 100 * time.Millisecond})
	claims := sqlite.NewIdempotency(db)
	first, second := build.NewID(clock.Now()), build.NewID(clock.Now())
	if owner, err := claims.Claim(t.Context(), "delivery:d1", first, time.Hour); err != nil || owner != first {
		t.Fatalf("Claim() = %s, %v; want %s", owner, err, first)
	}

	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("sql.Open() error = %v", err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatalf("Conn() error = %v", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE error = %v", err)
	}
	if owner, err := claims.Claim(t.Context(), "delivery:d1", second, time.Hour); err != nil || owner != first {
		t.Errorf("Claim() of a held claim while the database is write-locked = %s, %v; want %s", owner, err, first)
	}
	if _, err := claims.Claim(t.Context(), "delivery:d2", second, time.Hour); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Claim() of a new key while the database is write-locked error = %v, want ErrUnavailable", err)
	}
	if _, err := conn.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	clock.Advance(time.Hour) // the claim expires: the next one writes
	if owner, err := claims.Claim(t.Context(), "delivery:d1", second, time.Hour); err != nil || owner != second {
		t.Errorf("Claim() of an expired claim = %s, %v; want %s", owner, err, second)
	}
}

func TestOpenRejectsNonFilePaths(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		if db, err := sqlite.Open(path, sqlite.Options{}); !errors.Is(err, build.ErrInvalid) {
			if db != nil {
				db.Close()
			}
			t.Errorf("Open(%q) error = %v, want ErrInvalid", path, err)
		}
	}
}

// TestIntakeSupersedingEvents: the records EnqueueSuperseding ends have
// their events in the outbox, as EndWaiting writes them (the record as
// ended, its version one more than the stored one), beside the new
// request's creation; a record it leaves alone has none.
func TestIntakeSupersedingEvents(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	db := openDB(t, clock)
	q, claims, recs := sqlite.NewQueue(db, sqlite.QueueOptions{}), sqlite.NewIdempotency(db), sqlite.NewRecords(db)
	in, err := sqlite.NewIntake(q, claims, recs)
	if err != nil {
		t.Fatal(err)
	}
	request := func() build.Request {
		clock.Advance(time.Second)
		now := clock.Now().UTC()
		return build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "team", Project: "project", Ref: "main",
			RefType: build.Branch, SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPush, RequestedAt: now}
	}
	older := build.RecordFor(request())
	if err := recs.Save(t.Context(), older); err != nil {
		t.Fatal(err)
	}
	launching := build.RecordFor(request())
	if err := launching.Launching(clock.Now(), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := recs.Save(t.Context(), launching); err != nil {
		t.Fatal(err)
	}
	o := recs.Outbox()
	before, err := o.Pending(t.Context(), 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Forwarded(t.Context(), before...); err != nil {
		t.Fatal(err)
	}

	req := request()
	now := clock.Now().Add(time.Minute)
	if _, superseded, err := in.EnqueueSuperseding(t.Context(), req, nil, time.Hour, now); err != nil || len(superseded) != 1 || superseded[0] != older.BuildID {
		t.Fatalf("EnqueueSuperseding() = %v, %v; want [%s]", superseded, err, older.BuildID)
	}
	evs, err := o.Pending(t.Context(), 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	bySubject := map[build.ID]build.Event{}
	for _, e := range evs {
		bySubject[e.Subject] = e
	}
	if e, ok := bySubject[older.BuildID]; !ok || e.Version != 2 || e.Record.Status != build.StatusSuperseded || e.Record.SupersededBy != req.BuildID || !e.Record.FinishedAt.Equal(now) {
		t.Errorf("event of the superseded %s = %+v (found %v); want version 2, superseded by %s at %v", older.BuildID, e, ok, req.BuildID, now)
	}
	if e, ok := bySubject[req.BuildID]; !ok || e.Version != 1 || e.Record.Status != build.StatusQueued {
		t.Errorf("event of the new request %s = %+v (found %v); want version 1, queued", req.BuildID, e, ok)
	}
	if e, ok := bySubject[launching.BuildID]; ok {
		t.Errorf("an event of %s, which was being launched: %+v", launching.BuildID, e)
	}
	if len(evs) != 2 {
		t.Errorf("%d events, want 2", len(evs))
	}
}

// TestIntakeSupersedingFailureAcceptsTheRequest: a stored record of the
// lock key that does not decode makes the superseding fail, not the
// request: it is recorded and published, its superseding undone alone,
// and the error says so beside the owner (build.Intake).
func TestIntakeSupersedingFailureAcceptsTheRequest(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openPath(t, path, sqlite.Options{})
	q, claims, recs := sqlite.NewQueue(db, sqlite.QueueOptions{}), sqlite.NewIdempotency(db), sqlite.NewRecords(db)
	in, err := sqlite.NewIntake(q, claims, recs)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC().Truncate(time.Millisecond)
	request := func(at time.Time) build.Request {
		return build.Request{V: build.MessageVersion, BuildID: build.NewID(at), Team: "team", Project: "project", Ref: "main",
			RefType: build.Branch, SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPush, RequestedAt: at}
	}
	older, corrupt := build.RecordFor(request(base)), build.RecordFor(request(base.Add(time.Second)))
	for _, r := range []build.Record{older, corrupt} {
		if err := recs.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE records SET doc = json_set(CAST(doc AS TEXT), '$.queuedAt', 'not a time') WHERE id = ?`, string(corrupt.BuildID)); err != nil {
		t.Fatal(err)
	}

	req := request(base.Add(time.Minute))
	req.DeliveryID = "d1"
	owner, superseded, err := in.EnqueueSuperseding(t.Context(), req, []string{req.IdempotencyKey()}, time.Hour, base.Add(time.Minute))
	if owner != req.BuildID || err == nil || len(superseded) != 0 {
		t.Fatalf("EnqueueSuperseding() = %s, %v, %v; want %s, nothing superseded and an error", owner, superseded, err, req.BuildID)
	}
	if r, err := recs.Get(t.Context(), req.BuildID); err != nil || r.Status != build.StatusQueued {
		t.Errorf("Get(%s) = %s, %v; want it queued", req.BuildID, r.Status, err)
	}
	if r, err := recs.Get(t.Context(), older.BuildID); err != nil || r.Status != build.StatusQueued {
		t.Errorf("Get(%s) = %s, %v; want it left queued", older.BuildID, r.Status, err)
	}
	if msgs, err := q.Receive(t.Context(), 10, 0); err != nil || len(msgs) != 1 {
		t.Errorf("Receive() = %d messages, %v; want the request's one", len(msgs), err)
	}
	if o, err := claims.Claim(t.Context(), req.IdempotencyKey(), build.NewID(base.Add(time.Hour)), time.Hour); err != nil || o != req.BuildID {
		t.Errorf("the delivery's claim is %s's (%v), want %s's", o, err, req.BuildID)
	}
}
