package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
)

const testSource = "https://decap.test"

// openTaken opens a database whose record changes write their events
// into its stream (Stream.TakeRecordEvents), as the embedded backend does.
func openTaken(t *testing.T, path string) *DB {
	t.Helper()
	db := openPlainDBAt(t, path)
	if _, err := NewStream(db, StreamOptions{}).TakeRecordEvents(t.Context(), testSource); err != nil {
		t.Fatal(err)
	}
	return db
}

// streamView is the outbox as the stream that takes the records' events
// shows it (a build.EventOutbox for buildtest's contract): Pending returns
// the stream's events in stream order but those Forwarded took out of the
// view, without their source, which it checks; it waits on the stream's
// wake-ups, as a consumer does.
type streamView struct {
	db   *DB
	mu   sync.Mutex
	gone map[string]bool
}

func newStreamView(db *DB) *streamView { return &streamView{db: db, gone: map[string]bool{}} }

func (v *streamView) Pending(ctx context.Context, limit int, wait time.Duration) ([]build.Event, error) {
	return awaitEvents(ctx, wait, "read the stream", v.db.streamWake.wait, func() ([]build.Event, error) {
		return v.read(ctx, limit)
	})
}

func (v *streamView) read(ctx context.Context, limit int) ([]build.Event, error) {
	rows, err := v.db.rdb.QueryContext(ctx, `SELECT body FROM stream_events ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read the stream: %w", err)
	}
	defer rows.Close()
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []build.Event
	for rows.Next() && len(out) < limit {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		e, err := build.DecodeEvent(body)
		if err != nil {
			return nil, err
		}
		if e.Source != testSource {
			return nil, fmt.Errorf("event %s has source %q, want %q", e.ID, e.Source, testSource)
		}
		if !v.gone[e.ID] {
			e.Source = ""
			out = append(out, e)
		}
	}
	return out, rows.Err()
}

func (v *streamView) Forwarded(_ context.Context, evs ...build.Event) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range evs {
		v.gone[e.ID] = true
	}
	return nil
}

// TestRecordEventsToTheStream runs the outbox's contract (invariant 7)
// on the stream when it takes the records' events: each change is one
// event in the stream, versions 1, 2, 3… per build, in order, none for a
// write that changes nothing or is refused, a write wakes a waiting
// reader; and the outbox stays empty.
func TestRecordEventsToTheStream(t *testing.T) {
	t.Parallel()
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		db := openTaken(t, filepath.Join(t.TempDir(), "decap.db"))
		t.Cleanup(func() {
			if evs, err := NewRecords(db).Outbox().Pending(context.Background(), 10, 0); err != nil || len(evs) > 0 {
				t.Errorf("the outbox holds %d events (%v): the stream took none of them", len(evs), err)
			}
		})
		return NewRecords(db), newStreamView(db)
	})
}

// TestRecordEventsOfALife: the combined writes of a build's life — intake,
// launch claim, start, end — each publish the record's next version to
// the stream in their own transaction, with the source given.
func TestRecordEventsOfALife(t *testing.T) {
	t.Parallel()
	db := openTaken(t, filepath.Join(t.TempDir(), "decap.db"))
	q, locks, recs := NewQueue(db, QueueOptions{}), NewLocks(db), NewRecords(db)
	in, err := NewIntake(q, NewIdempotency(db), recs)
	if err != nil {
		t.Fatal(err)
	}
	launches, err := NewLaunches(locks, recs, q)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := NewEnds(locks, recs, q)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	req := build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "team", Project: "project", Ref: "main",
		RefType: build.Branch, SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPush, RequestedAt: now}
	if _, err := in.Enqueue(ctx, req, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	msgs, err := q.Receive(ctx, 1, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %d messages, %v", len(msgs), err)
	}
	rec := build.RecordFor(req)
	if err := rec.Launching(now, 2, true); err != nil {
		t.Fatal(err)
	}
	lease := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: "test", AcquiredAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := launches.Claim(ctx, lease, 10, rec); err != nil {
		t.Fatal(err)
	}
	started := rec
	if err := started.Start(now, "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	if _, err := launches.Started(ctx, lease.Key, now.Add(time.Hour), started, msgs[0].Receipt); err != nil {
		t.Fatal(err)
	}
	ended := started
	if err := ended.End(build.Outcome{BuildID: req.BuildID, Status: build.StatusSucceeded}, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := ends.Ended(ctx, ended, lease.Key); err != nil {
		t.Fatal(err)
	}

	view := newStreamView(db)
	evs, err := view.Pending(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s %s %s", e.ID, e.Type, e.Record.Status))
	}
	id := string(req.BuildID)
	want := []string{id + ":1 io.decap.build.queued queued", id + ":2 io.decap.build.queued queued",
		id + ":3 io.decap.build.started running", id + ":4 io.decap.build.succeeded succeeded"}
	if !slices.Equal(got, want) {
		t.Errorf("stream = %q, want %q", got, want)
	}
	if evs, err := recs.Outbox().Pending(ctx, 10, 0); err != nil || len(evs) > 0 {
		t.Errorf("outbox = %d events, %v; want none", len(evs), err)
	}
}

// TestRecordEventsWakeAnotherOpen: a record change written through one
// open of a file wakes a consumer of the stream in another open (another
// process) at once, though it rechecks only every minute.
func TestRecordEventsWakeAnotherOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	writer := openTaken(t, path)
	sub := NewStream(openPlainDBAt(t, path), StreamOptions{Recheck: time.Minute})
	got := make(chan build.Event, 10)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go sub.Consume(ctx, "across", func(_ context.Context, e build.Event) error { got <- e; return nil })
	recs := NewRecords(writer)
	r := build.Record{BuildID: build.NewID(time.Now()), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: time.Now()}
	// The consumer makes its group at the end of the stream once it runs:
	// change the record until it hears.
	deadline := time.After(15 * time.Second)
	for {
		r.Reason = time.Now().String()
		if err := recs.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-got:
			if e.Subject != r.BuildID || e.Source != testSource {
				t.Fatalf("consumer got %s from %q", e.ID, e.Source)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("a record change did not wake the consumer of another open")
		}
	}
}

// TestTakeRecordEventsMovesTheOutbox: what the outbox held when the stream
// took the records' events (a process crashed before forwarding them)
// goes into the stream first, in the outbox's order, so a build's later
// change comes after them; a row that does not decode stays in the outbox
// for the forwarder to report, and keeps nothing from starting.
func TestTakeRecordEventsMovesTheOutbox(t *testing.T) {
	t.Parallel()
	db := openPlainDBAt(t, filepath.Join(t.TempDir(), "decap.db"))
	recs := NewRecords(db)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	a := build.Record{BuildID: build.NewID(now), Team: "ae6rt", Project: "p", Ref: "a", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: now}
	b := a
	b.BuildID, b.Ref = build.NewID(now.Add(time.Millisecond)), "b"
	save := func(r build.Record) {
		t.Helper()
		if err := recs.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	save(a)
	save(b)
	if err := a.Defer(now, now.Add(time.Minute), "lock busy"); err != nil {
		t.Fatal(err)
	}
	save(a)
	bad := build.NewID(now)
	if err := db.write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO record_events (build_id, version, type, at, doc) VALUES (?, 1, ?, ?, ?)`,
			string(bad), string(build.EventQueued), nanos(now), []byte("not a record"))
		return err
	}); err != nil {
		t.Fatal(err)
	}

	s := NewStream(db, StreamOptions{})
	left, err := s.TakeRecordEvents(ctx, testSource)
	if err != nil {
		t.Fatalf("TakeRecordEvents() with an undecodable event in the outbox: %v", err)
	}
	if want := []string{build.EventID(bad, 1)}; !slices.Equal(left, want) {
		t.Errorf("TakeRecordEvents() left %v in the outbox, want %v", left, want)
	}
	if err := a.Start(now.Add(time.Second), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	save(a)
	evs, err := newStreamView(db).Pending(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.ID)
	}
	want := []string{build.EventID(a.BuildID, 1), build.EventID(b.BuildID, 1), build.EventID(a.BuildID, 2), build.EventID(a.BuildID, 3)}
	if !slices.Equal(got, want) {
		t.Errorf("stream = %v, want %v", got, want)
	}
	var stays int
	if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM record_events WHERE doc = ?`, []byte("not a record")).Scan(&stays); err != nil || stays != 1 {
		t.Errorf("the undecodable event: %d left in the outbox (%v), want 1", stays, err)
	}
	var all int
	if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM record_events`).Scan(&all); err != nil || all != 1 {
		t.Errorf("the outbox holds %d events (%v), want only the undecodable one", all, err)
	}
}

func TestTakeRecordEventsRefusesABadSource(t *testing.T) {
	t.Parallel()
	s := NewStream(openPlainDBAt(t, filepath.Join(t.TempDir(), "decap.db")), StreamOptions{})
	for _, source := range []string{"", "http://a b", "http://a\n"} {
		if _, err := s.TakeRecordEvents(t.Context(), source); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("TakeRecordEvents(%q) error = %v, want ErrInvalid", source, err)
		}
	}
	if s.db.toStream.Load() != nil {
		t.Error("a refused source still took the records' events")
	}
}

// TestStreamTrimsOldEvents: a write after the retention deletes the events
// published longer ago, and keeps the younger ones, whether a forwarder
// published them or record changes wrote them; at most once a minute.
func TestStreamTrimsOldEvents(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC))
	db, err := Open(filepath.Join(t.TempDir(), "decap.db"), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := NewStream(db, StreamOptions{Retention: time.Hour})
	if _, err := s.TakeRecordEvents(t.Context(), testSource); err != nil {
		t.Fatal(err)
	}
	recs := NewRecords(db)
	record := func(name string) build.Record {
		return build.Record{BuildID: build.NewID(clock.Now()), Team: "ae6rt", Project: "p", Ref: name, RefType: build.Branch,
			Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: clock.Now()}
	}
	change := func(name string) {
		t.Helper()
		if err := recs.Save(t.Context(), record(name)); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(name string) { // as a forwarder of the outbox does
		t.Helper()
		e := build.NewEvent(record(name), 1, clock.Now())
		e.Source = testSource
		m, err := events.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Publish("build-events", m); err != nil {
			t.Fatal(err)
		}
	}
	refs := func() []string {
		t.Helper()
		evs, err := newStreamView(db).Pending(t.Context(), 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			out = append(out, e.Record.Ref)
		}
		return out
	}
	start := clock.Now()
	at := func(d time.Duration) { clock.Advance(start.Add(d).Sub(clock.Now())) }
	change("a") // the process's first write trims: nothing is old
	at(10 * time.Second)
	publish("b")
	at(time.Hour + 5*time.Second) // a is over an hour old, b not yet
	change("c")
	if got, want := refs(), []string{"b", "c"}; !slices.Equal(got, want) {
		t.Errorf("after a trim the stream holds %q, want %q", got, want)
	}
	at(time.Hour + 30*time.Second) // b is over an hour old, but the last trim was 25 s ago
	change("d")
	if got, want := refs(), []string{"b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("a write within a minute of the last trim: the stream holds %q, want %q", got, want)
	}
	at(time.Hour + 70*time.Second)
	publish("e")
	if got, want := refs(), []string{"c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("after the next trim the stream holds %q, want %q", got, want)
	}
	at(5 * time.Hour)
	change("f")
	if got, want := refs(), []string{"f"}; !slices.Equal(got, want) {
		t.Errorf("after every event aged: the stream holds %q, want %q", got, want)
	}
}
