package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
)

// The embedded build-event stream (DESIGN.md "Build events"): a small
// watermill Publisher, which the events forwarder publishes to, the
// destination of the record changes' events when it takes them
// (TakeRecordEvents: then each change writes its event here itself, in its
// own transaction), and the build.EventStream that Decap's consumers read,
// over two tables of the
// database (schema version 9): stream_events, the events published in
// publish order, one per event ID (a second publish of an event, by a
// forwarder that crashed before it removed it from the outbox, is
// dropped); and stream_groups, each durable consumer group's position and
// the lease of the consumer holding it.
//
// Why not watermill-sql (github.com/ThreeDotsLabs/watermill-sql/v4, the
// SQL adapter the module proxy serves): it ships schema and offsets
// adapters for MySQL and PostgreSQL only, whose queries lock a group's
// offsets row with SELECT … FOR UPDATE, which SQLite does not have; it
// would bring both servers' drivers into the build; its publisher and
// subscribers run their own transactions on their own *sql.DB, outside
// this package's single writer and group commit, and its subscribers
// poll. An adapter of its own for SQLite would be as large as this file,
// which instead drops a second publish by event ID, wakes consumers of
// every process sharing the file at once (unix datagrams, as the queue's
// receivers are), and commits with the store's other writes.

// Defaults of StreamOptions.
const (
	DefaultStreamLease     = 30 * time.Second
	DefaultStreamRetention = 24 * time.Hour
	DefaultStreamRecheck   = 5 * time.Second
	// TailBuffer is how many events a tail's reader may fall behind
	// before its channel is closed.
	TailBuffer = 256
)

// Retry bounds of a handler's error: it is tried again after
// streamMinRetry, doubling up to streamMaxRetry.
const (
	streamMinRetry = 100 * time.Millisecond
	streamMaxRetry = time.Minute
)

// tailPage bounds the events a tail reads at once.
const tailPage = 500

// StreamOptions configures a Stream. Zero fields take the defaults.
type StreamOptions struct {
	// Lease is how long a consumer holds its group without renewing it
	// (it renews every third of it while it runs): when its process dies,
	// another process's consumer of the group takes over after at most
	// this long, and delivers again the event the dead one had not
	// acknowledged.
	Lease time.Duration
	// Retention is how long published events are kept: a group whose
	// consumers are all down longer misses the events older than this.
	Retention time.Duration
	// Recheck bounds how long a waiting consumer or tail sleeps without
	// a wake-up (a lost datagram, a lease another process let lapse).
	Recheck time.Duration
}

// Stream is the embedded build-event stream. It is safe for concurrent use,
// and every process sharing the database file may publish, consume and
// tail.
type Stream struct {
	db       *DB
	opts     StreamOptions
	lastTrim atomic.Int64 // Unix nanoseconds of this process's last trim
}

// NewStream returns the event stream stored in db.
func NewStream(db *DB, opts StreamOptions) *Stream {
	if opts.Lease <= 0 {
		opts.Lease = DefaultStreamLease
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultStreamRetention
	}
	if opts.Recheck <= 0 {
		opts.Recheck = DefaultStreamRecheck
	}
	return &Stream{db: db, opts: opts}
}

// Publish appends the messages' events to the stream, in order, in one
// write, dropping any whose event ID was published before; the topic is
// not kept (the stream is one topic). A message that is no build event
// (build.DecodeEvent) gives build.ErrInvalid and nothing is published.
// The write uses the first message's context.
func (s *Stream) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		e, err := build.DecodeEvent(m.Payload)
		if err != nil {
			return fmt.Errorf("publish to %s: message %s: %w", topic, m.UUID, err)
		}
		ids[i] = e.ID
	}
	ctx := msgs[0].Context()
	now := s.db.now()
	err := s.db.write(ctx, func(tx *Tx) error {
		for i, m := range msgs {
			if err := s.appendTx(ctx, tx, ids[i], []byte(m.Payload), now); err != nil {
				return err
			}
		}
		return s.trimTx(ctx, tx, now)
	})
	if err != nil {
		return fmt.Errorf("publish %d events to %s: %w", len(msgs), topic, err)
	}
	s.db.streamWake.notify()
	return nil
}

// appendTx appends one event (its ID and its CloudEvents body) in tx,
// unless an event of its ID was published before.
func (s *Stream) appendTx(ctx context.Context, tx *Tx, id string, body []byte, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO stream_events (id, body, published_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		id, body, now.UnixNano())
	return err
}

// trimTx deletes in tx the events older than the retention, once a minute
// at most in this process. A write that rolls back after it leaves them
// for the next minute's. The events were published in seq order, so the
// old ones are those before the first young one, which a walk in seq order
// finds past the old ones (the rows deleted anyway), without an index of
// publish times (schemaV13); an event stamped in the future (the clock
// stepped back) holds the trim behind it until it ages. The statement
// outlives a cancelled ctx: it runs inside a record change's write, which
// a trim cut short must not fail.
func (s *Stream) trimTx(ctx context.Context, tx *Tx, now time.Time) error {
	last := s.lastTrim.Load()
	if now.UnixNano()-last <= int64(time.Minute) || !s.lastTrim.CompareAndSwap(last, now.UnixNano()) {
		return nil
	}
	_, err := tx.ExecContext(context.WithoutCancel(ctx), `
DELETE FROM stream_events WHERE seq < IFNULL(
	(SELECT seq FROM stream_events WHERE published_at >= ? ORDER BY seq LIMIT 1),
	(SELECT IFNULL(MAX(seq), 0) + 1 FROM stream_events))`, now.Add(-s.opts.Retention).UnixNano())
	return err
}

// TakeRecordEvents has the record changes of db, from now on, write their
// events straight into the stream, in the change's own transaction,
// instead of into the outbox (Outbox) for a forwarder to publish here: the
// stream is in the same database, so it is the outbox, and an event is
// published when its change commits — none is lost on a crash, none
// waits for a forwarder, and the change's write is the only one. source
// is every event's CloudEvents source (DECAP_PUBLIC_URL); ErrInvalid if
// it is none. Call it before the first write.
//
// First it moves what the outbox holds (events a process wrote before and
// did not forward: it crashed, or ran an older Decap) into the stream, in
// the outbox's order, in one write, so that no build's later event is
// published before them. It returns the IDs of the events it left there,
// whose records do not decode (a bug: they cannot be published, and must
// not keep the services from starting; the forwarder reports them). A
// process that does not take the records' events still writes to the
// outbox, and its forwarder publishes from there: the processes sharing a
// file are upgraded together (stopped, then started), or a build changed
// by an older one and a newer one at once could see its events out of
// order.
func (s *Stream) TakeRecordEvents(ctx context.Context, source string) (left []string, err error) {
	if err := build.ValidateEventSource(source); err != nil {
		return nil, fmt.Errorf("record events to the stream: %w", err)
	}
	moved := 0
	err = s.db.write(ctx, func(tx *Tx) error {
		var err error
		moved, left, err = s.moveOutboxTx(ctx, tx, source)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record events to the stream: move the outbox's events: %w", err)
	}
	s.db.toStream.Store(&streamSink{stream: s, source: source})
	if moved > 0 {
		s.db.streamWake.notify()
	}
	return left, nil
}

// moveOutboxTx publishes in tx the events the outbox holds, in its order,
// and removes them from it; it returns how many it moved, and the IDs of
// those it left: an event whose record does not decode, or that does not
// encode. An event is encoded from its record as this Decap encodes one,
// as the forwarder did, whatever shape an older Decap stored it in.
func (s *Stream) moveOutboxTx(ctx context.Context, tx *Tx, source string) (moved int, left []string, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq, build_id, version, type, at, doc FROM record_events ORDER BY seq`)
	if err != nil {
		return 0, nil, err
	}
	type event struct {
		seq  int64
		body []byte
		id   string
	}
	var evs []event
	for rows.Next() {
		seq, e, doc, err := scanOutbox(rows)
		if err != nil {
			rows.Close()
			return 0, nil, err
		}
		e.Source = source
		var body []byte
		if err = json.Unmarshal(doc, &e.Record); err == nil {
			body, err = build.EncodeEvent(e)
		}
		if err != nil {
			left = append(left, e.ID)
			continue
		}
		evs = append(evs, event{seq: seq, body: body, id: e.ID})
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, nil, err
	}
	now := s.db.now()
	for _, e := range evs {
		if err := s.appendTx(ctx, tx, e.id, e.body, now); err != nil {
			return 0, nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM record_events WHERE seq = ?`, e.seq); err != nil {
			return 0, nil, err
		}
	}
	return len(evs), left, nil
}

// streamSink is where a DB's record changes publish their events when the
// stream takes them (TakeRecordEvents).
type streamSink struct {
	stream *Stream
	source string
}

// publishTx appends e, the event of a change, to the stream in the
// change's transaction tx; doc is the record as stored (its JSON).
func (k *streamSink) publishTx(ctx context.Context, tx *Tx, e build.Event, doc []byte) error {
	e.Source = k.source
	body, err := build.EncodeEventData(e, doc)
	if err != nil {
		return err
	}
	if err := k.stream.appendTx(ctx, tx, e.ID, body, e.Time); err != nil {
		return err
	}
	return k.stream.trimTx(ctx, tx, e.Time)
}

// Close does nothing: the database is its opener's to close.
func (s *Stream) Close() error { return nil }

// errLeaseLost ends a consumer's turn when another took its group.
var errLeaseLost = errors.New("the consumer group's lease was taken over")

// Consume delivers the group's events to handle, one at a time in publish
// order, until ctx ends; see build.EventStream. A group that does not
// exist yet is made at the end of the stream. One consumer of a group
// runs at a time, in any process: it holds the group's lease, and the
// others wait for it to end or lapse. A handler's error is retried in
// place (100 ms doubling to a minute). The group's position moves past an
// event once handle returned nil for it; an event whose body no longer
// decodes is skipped.
func (s *Stream) Consume(ctx context.Context, group string, handle build.EventHandler) error {
	if err := build.ValidateConsumerGroup(group); err != nil {
		return err
	}
	if err := s.db.streamWake.listen(); err != nil {
		return fmt.Errorf("consume %s: %w", group, err)
	}
	err := s.db.write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO stream_groups (name, next_seq) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM stream_events))
ON CONFLICT (name) DO NOTHING`, group)
		return err
	})
	if err != nil {
		return fmt.Errorf("consume %s: %w", group, err)
	}
	holder := token()
	backoff := time.Duration(0)
	for {
		woken := s.db.streamWake.wait()
		next, held, err := s.acquire(ctx, group, holder)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("consume %s: %w", group, ctx.Err())
		case errors.Is(err, build.ErrUnavailable):
			backoff = min(max(2*backoff, streamMinRetry), s.opts.Recheck)
			if !sleep(ctx, backoff, nil) {
				return fmt.Errorf("consume %s: %w", group, ctx.Err())
			}
			continue
		case err != nil:
			return fmt.Errorf("consume %s: %w", group, err)
		case !held:
			if !sleep(ctx, s.opts.Recheck, woken) {
				return fmt.Errorf("consume %s: %w", group, ctx.Err())
			}
			continue
		}
		backoff = 0
		err = s.serve(ctx, group, holder, next, handle)
		s.release(group, holder)
		if ctx.Err() != nil {
			return fmt.Errorf("consume %s: %w", group, ctx.Err())
		}
		if err != nil && !errors.Is(err, errLeaseLost) && !errors.Is(err, build.ErrUnavailable) {
			return fmt.Errorf("consume %s: %w", group, err)
		}
	}
}

// acquire takes or renews the group's lease for holder when it is free,
// lapsed or holder's, and returns the group's position.
func (s *Stream) acquire(ctx context.Context, group, holder string) (next int64, held bool, err error) {
	err = s.db.write(ctx, func(tx *Tx) error {
		now := s.db.now()
		err := tx.QueryRowContext(ctx, `
UPDATE stream_groups SET holder = ?, held_until = ?
WHERE name = ? AND (holder = '' OR holder = ? OR held_until < ?)
RETURNING next_seq`, holder, now.Add(s.opts.Lease).UnixNano(), group, holder, now.UnixNano()).Scan(&next)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		held = err == nil
		return err
	})
	return next, held, err
}

// release lets the group go, so that a consumer waiting for it (here or
// in another process) takes it at once.
func (s *Stream) release(group, holder string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.db.write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE stream_groups SET holder = '', held_until = 0 WHERE name = ? AND holder = ?`, group, holder)
		return err
	})
	if err == nil {
		s.db.streamWake.notify()
	} // else the lease lapses
}

// serve delivers the group's events from next on while holder holds the
// lease, renewing it; it returns errLeaseLost when another took it, or
// the error that ended it.
func (s *Stream) serve(ctx context.Context, group, holder string, next int64, handle build.EventHandler) error {
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		for sleep(lctx, s.opts.Lease/3, nil) {
			if _, held, err := s.acquire(lctx, group, holder); err == nil && !held {
				cancel(errLeaseLost)
				return
			}
		}
	}()
	defer func() { cancel(nil); <-renewed }()

	for {
		woken := s.db.streamWake.wait()
		seq, body, found, err := s.eventAt(lctx, next)
		if err != nil {
			return errors.Join(err, context.Cause(lctx))
		}
		if !found {
			if !sleep(lctx, s.opts.Recheck, woken) {
				return context.Cause(lctx)
			}
			continue
		}
		if e, err := build.DecodeEvent(body); err == nil {
			if !handleUntilDone(lctx, e, handle) {
				return context.Cause(lctx)
			}
		}
		if err := s.advance(lctx, group, holder, seq+1); err != nil {
			return errors.Join(err, context.Cause(lctx))
		}
		next = seq + 1
	}
}

// eventAt returns the first event published at seq from or later.
func (s *Stream) eventAt(ctx context.Context, from int64) (seq int64, body []byte, found bool, err error) {
	err = s.db.rdb.QueryRowContext(ctx, `SELECT seq, body FROM stream_events WHERE seq >= ? ORDER BY seq LIMIT 1`, from).Scan(&seq, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("read the stream: %w", classify(err))
	}
	return seq, body, true, nil
}

// advance moves the group's position to next, if holder still holds it.
func (s *Stream) advance(ctx context.Context, group, holder string, next int64) error {
	return s.db.write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE stream_groups SET next_seq = ? WHERE name = ? AND holder = ?`, next, group, holder)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errLeaseLost
		}
		return nil
	})
}

// handleUntilDone calls handle until it returns nil (true) or ctx ends
// (false), waiting between tries.
func handleUntilDone(ctx context.Context, e build.Event, handle build.EventHandler) bool {
	wait := streamMinRetry
	for {
		if handle(ctx, e) == nil {
			return true
		}
		if !sleep(ctx, wait, nil) {
			return false
		}
		wait = min(2*wait, streamMaxRetry)
	}
}

// sleep waits d, or until woken is closed (nil: never); false when ctx
// ended first.
func sleep(ctx context.Context, d time.Duration, woken <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-woken:
	case <-t.C:
	}
	return true
}

// Tail returns the events published from now on, live, until ctx ends;
// see build.EventStream. A reader more than TailBuffer events behind has
// its channel closed.
func (s *Stream) Tail(ctx context.Context) (<-chan build.Event, error) {
	if err := s.db.streamWake.listen(); err != nil {
		return nil, fmt.Errorf("tail the stream: %w", err)
	}
	var last int64
	if err := s.db.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM stream_events`).Scan(&last); err != nil {
		return nil, fmt.Errorf("tail the stream: %w", classify(err))
	}
	c := make(chan build.Event, TailBuffer)
	go func() {
		defer close(c)
		for {
			woken := s.db.streamWake.wait()
			evs, seq, n, err := s.after(ctx, last)
			if err == nil {
				for _, e := range evs {
					select {
					case c <- e:
					default:
						return // fell behind
					}
				}
				last = seq
				if n == tailPage {
					continue
				}
			}
			if !sleep(ctx, s.opts.Recheck, woken) {
				return
			}
		}
	}()
	return c, nil
}

// after returns the events of up to tailPage rows published after seq
// from, the seq of the last row read (from when none) and how many rows
// it read (an event that no longer decodes is left out).
func (s *Stream) after(ctx context.Context, from int64) ([]build.Event, int64, int, error) {
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT seq, body FROM stream_events WHERE seq > ? ORDER BY seq LIMIT ?`, from, tailPage)
	if err != nil {
		return nil, from, 0, classify(err)
	}
	defer rows.Close()
	var out []build.Event
	last, n := from, 0
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&last, &body); err != nil {
			return nil, from, 0, classify(err)
		}
		n++
		if e, err := build.DecodeEvent(body); err == nil {
			out = append(out, e)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, from, 0, classify(err)
	}
	return out, last, n, nil
}
