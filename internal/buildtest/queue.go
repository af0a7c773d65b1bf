package buildtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Queue defaults, the same as the SQLite adapter's and the SQS queue's.
const (
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultRedriveLimit      = 1000
	DedupWindow              = 5 * time.Minute
	// MaxReceive is the most messages one Receive returns, as with SQS.
	MaxReceive = 10
)

// QueueOptions configures a FakeQueue. Zero fields take the defaults.
type QueueOptions struct {
	// VisibilityTimeout is how long a received message stays invisible
	// (default DefaultVisibilityTimeout).
	VisibilityTimeout time.Duration
	// RedriveLimit is how often a message may be received; the receive
	// after that moves it to the dead-letter list (default
	// DefaultRedriveLimit).
	RedriveLimit int
}

// DeadLetter is a message in a dead-letter queue, with the reason it is there.
type DeadLetter struct {
	Message build.Message
	Reason  string
}

// FakeQueue is an in-memory Queue with SQS FIFO semantics, measured by an
// injected clock: message groups, visibility timeout, a deduplication window,
// receive counts and a redrive limit to a dead-letter list. It is safe for
// concurrent use. Receive long-polls in real time: it wakes when a message is
// published or released, when the earliest invisible message is due by the
// clock, or when wait passes.
type FakeQueue struct {
	now  func() time.Time
	opts QueueOptions

	mu      sync.Mutex
	msgs    []*fakeMessage // in publish order
	dedup   map[string]time.Time
	dead    []DeadLetter
	changed chan struct{} // closed and replaced on every change that may wake receivers
}

type fakeMessage struct {
	id        string
	group     string
	body      []byte
	sentAt    time.Time
	visibleAt time.Time
	receipt   string
	count     int
}

// NewQueue returns an empty FakeQueue reading time from now.
func NewQueue(now func() time.Time, opts QueueOptions) *FakeQueue {
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if opts.RedriveLimit <= 0 {
		opts.RedriveLimit = DefaultRedriveLimit
	}
	return &FakeQueue{
		now:     now,
		opts:    opts,
		dedup:   map[string]time.Time{},
		changed: make(chan struct{}),
	}
}

// Publish encodes and enqueues reqs, all or none; see Queue.
func (q *FakeQueue) Publish(ctx context.Context, reqs ...build.Request) error {
	bodies := make([][]byte, len(reqs))
	for i, r := range reqs {
		b, err := build.Encode(r)
		if err != nil {
			return fmt.Errorf("publish %s: %w", r.LockKey(), err)
		}
		bodies[i] = b
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, r := range reqs {
		q.sendLocked(r.LockKey(), r.DedupID(), bodies[i])
	}
	q.wakeLocked()
	return nil
}

// SendRaw enqueues an arbitrary body, as another producer might: for tests
// of malformed messages. An empty dedupID disables deduplication.
func (q *FakeQueue) SendRaw(ctx context.Context, groupID, dedupID string, body []byte) error {
	if groupID == "" {
		return fmt.Errorf("send raw: %w: empty group id", build.ErrInvalid)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sendLocked(groupID, dedupID, append([]byte(nil), body...))
	q.wakeLocked()
	return nil
}

func (q *FakeQueue) sendLocked(group, dedupID string, body []byte) {
	now := q.now()
	if len(q.dedup) > 1024 {
		for id, until := range q.dedup {
			if !now.Before(until) {
				delete(q.dedup, id)
			}
		}
	}
	if dedupID != "" {
		if until, ok := q.dedup[dedupID]; ok && now.Before(until) {
			return
		}
		q.dedup[dedupID] = now.Add(DedupWindow)
	}
	q.msgs = append(q.msgs, &fakeMessage{
		id:        token(),
		group:     group,
		body:      body,
		sentAt:    now,
		visibleAt: now,
	})
}

// Receive returns up to n (1 to MaxReceive) messages, at most one per
// group, waiting up to wait for the first; see Queue. When ctx ends while it
// waits it returns ctx's error.
func (q *FakeQueue) Receive(ctx context.Context, n int, wait time.Duration) ([]build.Message, error) {
	n = min(max(n, 1), MaxReceive)
	deadline := time.Now().Add(wait)
	for {
		q.mu.Lock()
		got, next := q.receiveLocked(n)
		changed := q.changed
		q.mu.Unlock()
		if len(got) > 0 {
			return got, nil
		}
		sleep := time.Until(deadline)
		if sleep <= 0 {
			return nil, nil
		}
		if !next.IsZero() {
			sleep = min(sleep, max(next.Sub(q.now()), time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("receive: %w", ctx.Err())
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// receiveLocked delivers up to n messages and, when there is none, returns
// the earliest time an invisible group head becomes visible (zero if none).
func (q *FakeQueue) receiveLocked(n int) ([]build.Message, time.Time) {
	now := q.now()
	var got []build.Message
	var next time.Time
	seen := map[string]bool{} // groups whose head was considered
	for i := 0; i < len(q.msgs) && len(got) < n; {
		m := q.msgs[i]
		if seen[m.group] {
			i++
			continue
		}
		seen[m.group] = true
		if m.visibleAt.After(now) {
			if next.IsZero() || m.visibleAt.Before(next) {
				next = m.visibleAt
			}
			i++
			continue
		}
		if m.count >= q.opts.RedriveLimit {
			q.dead = append(q.dead, DeadLetter{
				Message: m.message(),
				Reason:  fmt.Sprintf("receive count %d reached the redrive limit", m.count),
			})
			q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
			seen[m.group] = false // the next message of the group is its head now
			continue
		}
		m.count++
		m.receipt = token()
		m.visibleAt = now.Add(q.opts.VisibilityTimeout)
		got = append(got, m.message())
		i++
	}
	if len(got) > 0 {
		next = time.Time{}
	}
	return got, next
}

func (m *fakeMessage) message() build.Message {
	return build.Message{
		ID:           m.id,
		Receipt:      m.receipt,
		GroupID:      m.group,
		Body:         append([]byte(nil), m.body...),
		ReceiveCount: m.count,
		SentAt:       m.sentAt,
	}
}

// findLocked returns the index of the message whose current receipt is
// receipt, or -1.
func (q *FakeQueue) findLocked(receipt string) int {
	if receipt == "" {
		return -1
	}
	for i, m := range q.msgs {
		if m.receipt == receipt {
			return i
		}
	}
	return -1
}

// Delete removes a received message; see Queue.
func (q *FakeQueue) Delete(ctx context.Context, receipt string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.findLocked(receipt)
	if i < 0 {
		return fmt.Errorf("delete message: %w: receipt is stale or unknown", build.ErrNotFound)
	}
	q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
	q.wakeLocked()
	return nil
}

// ChangeVisibility makes a received message visible again after d; see Queue.
func (q *FakeQueue) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("change visibility: %w: negative duration %v", build.ErrInvalid, d)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changeVisibilityLocked(receipt, d)
}

// changeVisibilityLocked is ChangeVisibility with q.mu held.
func (q *FakeQueue) changeVisibilityLocked(receipt string, d time.Duration) error {
	i := q.findLocked(receipt)
	if i < 0 {
		return fmt.Errorf("change visibility: %w: receipt is stale or unknown", build.ErrNotFound)
	}
	q.msgs[i].visibleAt = q.now().Add(d)
	q.wakeLocked()
	return nil
}

// DeadLetter moves a received message to the dead-letter list; see Queue.
// A stale receipt gives ErrNotFound.
func (q *FakeQueue) DeadLetter(ctx context.Context, m build.Message, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.findLocked(m.Receipt)
	if i < 0 {
		return fmt.Errorf("dead-letter message %s: %w: receipt is stale or unknown", m.ID, build.ErrNotFound)
	}
	q.dead = append(q.dead, DeadLetter{Message: q.msgs[i].message(), Reason: reason})
	q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
	q.wakeLocked()
	return nil
}

// Stats counts messages; see Queue.
func (q *FakeQueue) Stats(ctx context.Context) (build.QueueStats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	s := build.QueueStats{DeadLettered: len(q.dead)}
	var oldest time.Time
	for _, m := range q.msgs {
		if m.visibleAt.After(now) {
			s.InFlight++
		} else {
			s.Visible++
		}
		if oldest.IsZero() || m.sentAt.Before(oldest) {
			oldest = m.sentAt
		}
	}
	if !oldest.IsZero() {
		s.OldestAge = now.Sub(oldest)
	}
	return s, nil
}

// DeadLetters returns the dead-letter list, oldest first.
func (q *FakeQueue) DeadLetters() []DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]DeadLetter(nil), q.dead...)
}

// wakeLocked wakes every waiting Receive.
func (q *FakeQueue) wakeLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// token returns a random 128-bit hex string for message IDs and receipts.
func token() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
