package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Queue defaults, the same as the SQS queue's.
const (
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultRedriveLimit      = 1000
	DefaultDedupWindow       = 5 * time.Minute
	DefaultRecheckInterval   = 5 * time.Second
	// MaxReceive is the most messages one Receive returns, as with SQS.
	MaxReceive = 10
	// MaxRawSize bounds a body sent with SendRaw, as SQS does.
	MaxRawSize = 256 << 10
)

// QueueOptions configures a Queue. Zero fields take the defaults.
type QueueOptions struct {
	// VisibilityTimeout is how long a received message stays invisible
	// (default DefaultVisibilityTimeout).
	VisibilityTimeout time.Duration
	// RedriveLimit is how often a message may be received; the receive
	// after that moves it to the dead-letter table (default
	// DefaultRedriveLimit).
	RedriveLimit int
	// DedupWindow is how long a deduplication ID is remembered (default
	// DefaultDedupWindow).
	DedupWindow time.Duration
	// RecheckInterval is the longest a waiting Receive sleeps without a
	// wake-up before looking at the database again (default
	// DefaultRecheckInterval).
	RecheckInterval time.Duration
}

// Queue is the build queue with SQS FIFO semantics (buildtest.Queue): message
// groups, visibility timeout, deduplication, receive counts and a dead-letter
// table. Several processes may use one database's queue at once. It is safe
// for concurrent use.
type Queue struct {
	db   *DB
	opts QueueOptions
}

// NewQueue returns the queue stored in db.
func NewQueue(db *DB, opts QueueOptions) *Queue {
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if opts.RedriveLimit <= 0 {
		opts.RedriveLimit = DefaultRedriveLimit
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.RecheckInterval <= 0 {
		opts.RecheckInterval = DefaultRecheckInterval
	}
	return &Queue{db: db, opts: opts}
}

type outgoing struct {
	group, dedupID string
	body           []byte
}

// Publish enqueues reqs, all or none, with group = LockKey() and
// deduplication ID = DedupID(). A request whose deduplication ID was
// published within the dedup window is accepted and dropped; a request with
// neither delivery nor build ID is not deduplicated. An invalid request
// gives build.ErrInvalid.
func (q *Queue) Publish(ctx context.Context, reqs ...build.Request) error {
	if len(reqs) == 0 {
		return nil
	}
	out := make([]outgoing, len(reqs))
	for i, r := range reqs {
		body, err := build.Encode(r)
		if err != nil {
			return fmt.Errorf("publish %s: %w", r.LockKey(), err)
		}
		out[i] = outgoing{group: r.LockKey(), dedupID: r.DedupID(), body: body}
	}
	if err := q.send(ctx, out); err != nil {
		return fmt.Errorf("publish %d requests: %w", len(reqs), err)
	}
	return nil
}

// SendRaw enqueues an arbitrary body, as a producer other than ingest might,
// for tests and tools. An empty dedupID disables deduplication.
func (q *Queue) SendRaw(ctx context.Context, groupID, dedupID string, body []byte) error {
	if groupID == "" || len(body) > MaxRawSize {
		return fmt.Errorf("send message: %w: empty group id or body over %d bytes", build.ErrInvalid, MaxRawSize)
	}
	if err := q.send(ctx, []outgoing{{group: groupID, dedupID: dedupID, body: body}}); err != nil {
		return fmt.Errorf("send message to group %s: %w", groupID, err)
	}
	return nil
}

func (q *Queue) send(ctx context.Context, msgs []outgoing) error {
	sent := false
	err := q.db.write(ctx, func(tx *Tx) error {
		var err error
		sent, err = q.sendTx(ctx, tx, msgs, nanos(q.db.now()))
		return err
	})
	if err == nil && sent {
		q.db.wake.notify()
	}
	return err
}

// sendTx enqueues msgs within tx, at now (Unix nanoseconds), and tells
// whether it enqueued any (a duplicate within the dedup window is
// dropped). The caller wakes the receivers after the commit.
func (q *Queue) sendTx(ctx context.Context, tx *Tx, msgs []outgoing, now int64) (sent bool, err error) {
	if limit, due := q.db.dedupPurge.due(); due {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM queue_dedup WHERE dedup_id IN (SELECT dedup_id FROM queue_dedup WHERE expires_at <= ? LIMIT ?)`, now, limit); err != nil {
			return false, err
		}
	}
	for _, m := range msgs {
		if m.dedupID != "" {
			res, err := tx.ExecContext(ctx, `
INSERT INTO queue_dedup (dedup_id, expires_at) VALUES (?, ?)
ON CONFLICT (dedup_id) DO UPDATE SET expires_at = excluded.expires_at WHERE queue_dedup.expires_at <= ?`,
				m.dedupID, now+int64(q.opts.DedupWindow), now)
			if err != nil {
				return false, err
			}
			if n, err := res.RowsAffected(); err != nil {
				return false, err
			} else if n == 0 {
				continue // a duplicate within the window
			}
		}
		if _, err := tx.ExecContext(ctx, `
INSERT INTO queue_messages (id, group_id, dedup_id, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?, ?)`,
			token(), m.group, m.dedupID, m.body, now, now); err != nil {
			return false, err
		}
		sent = true
	}
	return sent, nil
}

// Receive returns up to n messages (1 to MaxReceive), at most one per group,
// waiting up to wait for the first. Within a group messages come in publish
// order, and none while an earlier one is in flight. Each returned message is
// invisible for the visibility timeout. A message already received
// RedriveLimit times is moved to the dead-letter table instead. When ctx ends
// while it waits, Receive returns ctx's error.
//
// While it waits, Receive sleeps until a publish or release in this or
// another process wakes it, until the earliest in-flight message's
// visibility ends, or for RecheckInterval, whichever comes first.
func (q *Queue) Receive(ctx context.Context, n int, wait time.Duration) ([]build.Message, error) {
	n = min(max(n, 1), MaxReceive)
	deadline := time.Now().Add(wait)
	if wait > 0 {
		if err := q.db.wake.listen(); err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
	}
	for {
		woken := q.db.wake.wait()
		msgs, next, err := q.receiveOnce(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		if len(msgs) > 0 {
			return msgs, nil
		}
		sleep := time.Until(deadline)
		if sleep <= 0 {
			return nil, nil
		}
		sleep = min(sleep, q.opts.RecheckInterval)
		if !next.IsZero() {
			sleep = min(sleep, max(next.Sub(q.db.now()), time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("receive: %w", ctx.Err())
		case <-woken:
		case <-t.C:
		}
		t.Stop()
	}
}

// receiveOnce delivers up to n messages in one transaction. When there are
// none, it returns the earliest time an in-flight message becomes visible
// (zero if none).
func (q *Queue) receiveOnce(ctx context.Context, n int) ([]build.Message, time.Time, error) {
	var got []build.Message
	var next time.Time
	err := q.db.write(ctx, func(tx *Tx) error {
		got, next = nil, time.Time{}
		now := q.db.now()
		lease := nanos(now.Add(q.opts.VisibilityTimeout))
		for round := 0; len(got) < n; round++ {
			heads, err := visibleHeads(ctx, tx, nanos(now), n-len(got))
			if err != nil {
				return err
			}
			redriven := false
			for _, h := range heads {
				if h.ReceiveCount >= q.opts.RedriveLimit {
					reason := fmt.Sprintf("receive count %d reached the redrive limit", h.ReceiveCount)
					if err := deadLetter(ctx, tx, h.seq, reason, nanos(now)); err != nil {
						return err
					}
					redriven = true
					continue
				}
				h.Receipt = token()
				h.ReceiveCount++
				if _, err := tx.ExecContext(ctx,
					`UPDATE queue_messages SET receipt = ?, receive_count = ?, visible_at = ? WHERE seq = ?`,
					h.Receipt, h.ReceiveCount, lease, h.seq); err != nil {
					return err
				}
				got = append(got, h.Message)
			}
			// Dead-lettering a head exposes the next message of its group.
			if !redriven {
				break
			}
		}
		if len(got) > 0 {
			return nil
		}
		var ns sql.NullInt64
		if err := tx.QueryRowContext(ctx,
			`SELECT MIN(visible_at) FROM queue_messages WHERE visible_at > ?`, nanos(now)).Scan(&ns); err != nil {
			return err
		}
		if ns.Valid {
			next = fromNanos(ns.Int64)
		}
		return nil
	})
	return got, next, err
}

type head struct {
	build.Message
	seq int64
}

// visibleHeads returns up to n visible messages that are first in their
// group, in publish order. Only a group's first message is ever received, so
// a group whose first message is invisible (in flight or deferred) is
// blocked as a whole.
func visibleHeads(ctx context.Context, tx *Tx, now int64, n int) ([]head, error) {
	// "+m.visible_at" keeps the planner on the seq order, which ends the
	// scan after n rows in the common case.
	rows, err := tx.QueryContext(ctx, `
SELECT m.seq, m.id, m.group_id, m.body, m.sent_at, m.receive_count
FROM queue_messages AS m
WHERE +m.visible_at <= ?
  AND m.seq = (SELECT MIN(h.seq) FROM queue_messages AS h WHERE h.group_id = m.group_id)
ORDER BY m.seq
LIMIT ?`, now, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var heads []head
	for rows.Next() {
		var h head
		var sent int64
		if err := rows.Scan(&h.seq, &h.ID, &h.GroupID, &h.Body, &sent, &h.ReceiveCount); err != nil {
			return nil, err
		}
		h.SentAt = fromNanos(sent)
		heads = append(heads, h)
	}
	return heads, rows.Err()
}

// deadLetter moves the message seq to the dead-letter table.
func deadLetter(ctx context.Context, tx *Tx, seq int64, reason string, now int64) error {
	if _, err := tx.ExecContext(ctx, `
INSERT INTO queue_dead_letters (id, group_id, dedup_id, body, sent_at, receive_count, reason, dead_at)
SELECT id, group_id, dedup_id, body, sent_at, receive_count, ?, ? FROM queue_messages WHERE seq = ?`,
		reason, now, seq); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE seq = ?`, seq)
	return err
}

// byReceipt finds the message whose latest delivery has receipt. ok is false
// for a stale or unknown receipt.
func byReceipt(ctx context.Context, tx *Tx, receipt string) (seq int64, group string, ok bool, err error) {
	if receipt == "" {
		return 0, "", false, nil
	}
	err = tx.QueryRowContext(ctx, `SELECT seq, group_id FROM queue_messages WHERE receipt = ?`, receipt).Scan(&seq, &group)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	return seq, group, err == nil, err
}

// groupHasMore reports whether group still has messages.
func groupHasMore(ctx context.Context, tx *Tx, group string) (bool, error) {
	var more bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM queue_messages WHERE group_id = ?)`, group).Scan(&more)
	return more, err
}

// Delete removes a received message. A stale or unknown receipt gives
// build.ErrNotFound.
func (q *Queue) Delete(ctx context.Context, receipt string) error {
	more := false
	err := q.db.write(ctx, func(tx *Tx) error {
		var err error
		more, err = deleteTx(ctx, tx, receipt)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete message: %w", err)
	}
	if more {
		q.db.wake.notify() // the group's next message is receivable
	}
	return nil
}

// deleteTx is Delete within tx; more reports whether the message's group
// has messages left (whose receivers the caller wakes after the commit).
func deleteTx(ctx context.Context, tx *Tx, receipt string) (more bool, err error) {
	seq, group, ok, err := byReceipt(ctx, tx, receipt)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("%w: receipt is stale or unknown", build.ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE seq = ?`, seq); err != nil {
		return false, err
	}
	return groupHasMore(ctx, tx, group)
}

// ChangeVisibility makes a received message visible again after d (0 = now).
// A stale or unknown receipt gives build.ErrNotFound, a negative d
// build.ErrInvalid.
func (q *Queue) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("change visibility: %w: negative duration %v", build.ErrInvalid, d)
	}
	err := q.db.write(ctx, func(tx *Tx) error {
		return changeVisibilityTx(ctx, tx, receipt, nanos(q.db.now().Add(d)))
	})
	if err != nil {
		return fmt.Errorf("change visibility: %w", err)
	}
	// Waiting receivers recompute when to look again.
	q.db.wake.notify()
	return nil
}

// changeVisibilityTx is ChangeVisibility within tx: the message becomes
// visible at visibleAt (Unix nanoseconds).
func changeVisibilityTx(ctx context.Context, tx *Tx, receipt string, visibleAt int64) error {
	res, err := tx.ExecContext(ctx, `UPDATE queue_messages SET visible_at = ? WHERE receipt = ?`, visibleAt, receipt)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("%w: receipt is stale or unknown", build.ErrNotFound)
	}
	return nil
}

// DeadLetter moves a received message to the dead-letter table with reason
// and deletes it from the queue. A stale or unknown receipt gives
// build.ErrNotFound.
func (q *Queue) DeadLetter(ctx context.Context, m build.Message, reason string) error {
	more := false
	err := q.db.write(ctx, func(tx *Tx) error {
		seq, group, ok, err := byReceipt(ctx, tx, m.Receipt)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: receipt is stale or unknown", build.ErrNotFound)
		}
		if err := deadLetter(ctx, tx, seq, reason, nanos(q.db.now())); err != nil {
			return err
		}
		more, err = groupHasMore(ctx, tx, group)
		return err
	})
	if err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	if more {
		q.db.wake.notify()
	}
	return nil
}

// Stats counts messages: visible (including those waiting behind an
// in-flight message of their group), in flight (received or deferred),
// dead-lettered, and the age of the oldest message in the queue.
func (q *Queue) Stats(ctx context.Context) (build.QueueStats, error) {
	now := q.db.now()
	var s build.QueueStats
	var oldest sql.NullInt64
	err := q.db.rdb.QueryRowContext(ctx, `
SELECT
	(SELECT COUNT(*) FROM queue_messages WHERE visible_at <= ?1),
	(SELECT COUNT(*) FROM queue_messages WHERE visible_at > ?1),
	(SELECT COUNT(*) FROM queue_dead_letters),
	(SELECT MIN(sent_at) FROM queue_messages)`, nanos(now)).Scan(&s.Visible, &s.InFlight, &s.DeadLettered, &oldest)
	if err != nil {
		return build.QueueStats{}, fmt.Errorf("queue stats: %w", classify(err))
	}
	if oldest.Valid {
		s.OldestAge = now.Sub(fromNanos(oldest.Int64))
	}
	return s, nil
}

// DeadLetter is a message in the dead-letter table.
type DeadLetter struct {
	Message build.Message
	Reason  string
	DeadAt  time.Time
}

// DeadLetters returns up to limit dead-lettered messages, newest first.
func (q *Queue) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	rows, err := q.db.rdb.QueryContext(ctx, `
SELECT id, group_id, body, sent_at, receive_count, reason, dead_at
FROM queue_dead_letters ORDER BY seq DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", classify(err))
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var sent, dead int64
		if err := rows.Scan(&d.Message.ID, &d.Message.GroupID, &d.Message.Body, &sent, &d.Message.ReceiveCount, &d.Reason, &dead); err != nil {
			return nil, fmt.Errorf("list dead letters: %w", classify(err))
		}
		d.Message.SentAt, d.DeadAt = fromNanos(sent), fromNanos(dead)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list dead letters: %w", classify(err))
	}
	return out, nil
}
