package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Outbox is the records' build-event outbox (build.EventOutbox): the table
// record_events, to which every record write adds its event in the write's
// own transaction (writeEvent), so a change committed is an event kept,
// whatever crashes after. Pending reads it in write order; Forwarded
// deletes from it. It is safe for concurrent use, and several processes
// may forward one database's outbox at once.
type Outbox struct {
	db *DB
}

// maxPending bounds the events one Pending returns.
const maxPending = 1000

// Outbox returns the outbox of the records' database.
func (s *Records) Outbox() build.EventOutbox { return &Outbox{db: s.db} }

// Pending returns up to limit events (1 to maxPending), oldest first; see
// build.EventOutbox. Each build's events are written in version order by
// transactions that the database serializes, and leave the outbox in that
// order, so the first rows in write order hold, for each build, a run
// from its oldest pending version: one whose predecessor has left.
//
// When none is pending it waits up to wait: a record write of this process
// wakes it at once; a write of another process sharing the file is seen
// when the wait ends, when Pending reads the outbox again (a forwarder
// runs in every process that writes records, so another process's events
// wait only when it died before forwarding them).
func (o *Outbox) Pending(ctx context.Context, limit int, wait time.Duration) ([]build.Event, error) {
	limit = min(max(limit, 1), maxPending)
	return awaitEvents(ctx, wait, "read the outbox", o.db.written.wait, func() ([]build.Event, error) {
		return o.read(ctx, limit)
	})
}

// awaitEvents calls read until it returns events or fails, and while it
// returns none, waits for the next wake-up (woken: a channel closed at
// the next one, taken before each read so none is missed), up to wait in
// all: then it returns nothing. what names the read in a context's error.
func awaitEvents(ctx context.Context, wait time.Duration, what string, woken func() <-chan struct{},
	read func() ([]build.Event, error)) ([]build.Event, error) {
	deadline := time.Now().Add(wait)
	for {
		next := woken()
		evs, err := read()
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		timer := time.NewTimer(left)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("%s: %w", what, ctx.Err())
		case <-next:
		case <-timer.C: // read once more: another process may have written
		}
		timer.Stop()
	}
}

// read returns the first limit events in write order, and remembers
// their rows for Forwarded.
func (o *Outbox) read(ctx context.Context, limit int) ([]build.Event, error) {
	rows, err := o.db.rdb.QueryContext(ctx, `SELECT seq, build_id, version, type, at, doc FROM record_events ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read the outbox: %w", classify(err))
	}
	defer rows.Close()
	var out []build.Event
	var seqs []int64
	for rows.Next() {
		seq, e, doc, err := scanOutbox(rows)
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", classify(err))
		}
		if err := json.Unmarshal(doc, &e.Record); err != nil {
			return nil, fmt.Errorf("read the outbox: event %s: %w", e.ID, err)
		}
		out = append(out, e)
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the outbox: %w", classify(err))
	}
	o.db.eventSeqs.remember(out, seqs)
	return out, nil
}

// scanOutbox reads an outbox row: seq, build_id, version, type, at, doc;
// the event's Record is left to decode from doc.
func scanOutbox(rows *sql.Rows) (seq int64, e build.Event, doc []byte, err error) {
	var id, typ string
	var at int64
	var version int
	if err := rows.Scan(&seq, &id, &version, &typ, &at, &doc); err != nil {
		return 0, build.Event{}, nil, err
	}
	e = build.Event{ID: build.EventID(build.ID(id), version), Type: build.EventType(typ), Subject: build.ID(id),
		Time: fromNanos(at), Version: version}
	return seq, e, doc, nil
}

// Forwarded deletes the events from the outbox, in one write; events
// already gone are no error. An event that Pending returned in this
// process is found by its row (seq); another (Pending of another process,
// or long ago) by a scan of the outbox, which holds the events not yet
// forwarded.
func (o *Outbox) Forwarded(ctx context.Context, evs ...build.Event) error {
	if len(evs) == 0 {
		return nil
	}
	seqs := o.db.eventSeqs.rows(evs) // before the write lock is taken
	err := o.db.write(ctx, func(tx *Tx) error {
		for i, e := range evs {
			var err error
			if seq, ok := seqs[i]; ok {
				_, err = tx.ExecContext(ctx, `DELETE FROM record_events WHERE seq = ? AND build_id = ? AND version = ?`, seq, string(e.Subject), e.Version)
			} else {
				_, err = tx.ExecContext(ctx, `DELETE FROM record_events WHERE build_id = ? AND version = ?`, string(e.Subject), e.Version)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove %d forwarded events: %w", len(evs), err)
	}
	o.db.eventSeqs.forget(evs)
	return nil
}

// seqMemo remembers the outbox rows (seq) of the events Pending returned,
// by event ID, so that Forwarded finds them without an index by build and
// version (schemaV11). It holds at most maxRemembered; past that it
// starts afresh, and an event it forgot is found by a scan. The zero
// value is ready; it is safe for concurrent use.
type seqMemo struct {
	mu   sync.Mutex
	seqs map[string]int64
}

// maxRemembered bounds seqMemo: a few reads' worth.
const maxRemembered = 4 * maxPending

func (m *seqMemo) remember(evs []build.Event, seqs []int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seqs == nil || len(m.seqs)+len(evs) > maxRemembered {
		m.seqs = make(map[string]int64, len(evs))
	}
	for i, e := range evs {
		m.seqs[e.ID] = seqs[i]
	}
}

// rows returns the remembered rows of evs, by index in evs.
func (m *seqMemo) rows(evs []build.Event) map[int]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]int64, len(evs))
	for i, e := range evs {
		if seq, ok := m.seqs[e.ID]; ok {
			out[i] = seq
		}
	}
	return out
}

// forget drops the rows of events that left the outbox.
func (m *seqMemo) forget(evs []build.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range evs {
		delete(m.seqs, e.ID)
	}
}

// writeEvent adds the event of a change to the outbox, or to the stream
// if it takes the records' events (Stream.TakeRecordEvents), in the
// change's transaction tx: version is the record's version after the
// change, doc the record as stored. The caller calls db.eventsWritten
// once the transaction committed.
func (db *DB) writeEvent(ctx context.Context, tx *Tx, r build.Record, version int, doc []byte) error {
	e := build.NewEvent(r, version, db.now())
	if sink := db.toStream.Load(); sink != nil {
		if err := sink.publishTx(ctx, tx, e, doc); err != nil {
			return fmt.Errorf("publish event %s: %w", e.ID, err)
		}
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO record_events (build_id, version, type, at, doc) VALUES (?, ?, ?, ?, ?)`,
		string(e.Subject), e.Version, string(e.Type), nanos(e.Time), doc)
	if err != nil {
		return fmt.Errorf("write event %s: %w", e.ID, err)
	}
	return nil
}

// eventsWritten wakes what waits for the events of this process's record
// changes, once their write committed: the outbox's Pending, or the
// stream's consumers and tails (of every process) when the stream took
// the events.
func (db *DB) eventsWritten() {
	if db.toStream.Load() != nil {
		db.streamWake.notify()
		return
	}
	db.written.fire()
}

// signal wakes the waiters of this process: wait returns a channel that
// fire closes (and replaces).
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

// wait returns the channel of the next fire. Take it before looking, so a
// fire in between is not missed.
func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}
