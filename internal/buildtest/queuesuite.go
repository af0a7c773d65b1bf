package buildtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// Settings that queues under TestQueue must have.
const (
	// SuiteVisibilityTimeout is the visibility timeout TestQueue expects.
	SuiteVisibilityTimeout = DefaultVisibilityTimeout
	// SuiteRedriveLimit is the redrive limit TestQueue expects.
	SuiteRedriveLimit = 3
	// RealTimeVisibilityTimeout is the visibility timeout TestQueueWith
	// expects in RealTime mode unless QueueSuiteOptions says otherwise.
	RealTimeVisibilityTimeout = 2 * time.Second
)

// promptly bounds how long a woken Receive may take to return. Wake-ups take
// milliseconds; the bound is loose for loaded machines but below the 5 s
// fallback recheck of the SQLite adapter, so a missing wake-up fails.
const promptly = 4 * time.Second

// Tolerances of RealTime mode, where the queue's clock is not the test's.
const (
	// early is how much sooner than due a message may reappear: the test
	// starts its stopwatch only after the call that started the timer
	// returned, so the true interval is a little longer than measured.
	early = 500 * time.Millisecond
	// clockSkew bounds the difference between the queue's clock (SentAt)
	// and this machine's.
	clockSkew = 5 * time.Second
)

// QueueSuiteOptions adapts TestQueueWith to queues that the suite's Clock
// does not drive. The zero value is TestQueue's strict, clock-driven mode.
type QueueSuiteOptions struct {
	// RealTime says the queue judges visibility, deferral and deduplication
	// by its own clock, as SQS (or an emulator of it) does. The suite then:
	//   - waits in wall-clock time instead of advancing the Clock, and
	//     checks that a message reappears neither before its visibility ends
	//     nor long after;
	//   - skips the check that deduplication ends after DedupWindow (the
	//     window itself is still checked);
	//   - accepts several messages of one group in one Receive, as long as
	//     they come in publish order and no later message of a group is
	//     delivered while an earlier one is in flight;
	//   - polls Stats until the counts match (they are eventually
	//     consistent) and accepts any OldestAge >= 0 (0 meaning unknown);
	//   - compares SentAt with the wall clock, allowing some clock skew.
	RealTime bool
	// VisibilityTimeout is the queue's visibility timeout in RealTime mode,
	// a whole number of seconds (default RealTimeVisibilityTimeout). In the
	// default mode the queue must use SuiteVisibilityTimeout.
	VisibilityTimeout time.Duration
	// LenientReceipts says Delete, ChangeVisibility and a second Delete may
	// succeed with a stale receipt instead of giving ErrNotFound. SQS
	// documents that a DeleteMessage with an old receipt "succeeds, but the
	// message might not be deleted", and moto accepts every receipt a
	// message ever had. The suite then accepts nil or ErrNotFound for
	// those calls; receipts that never existed must still give ErrNotFound.
	LenientReceipts bool
	// StatsTimeout bounds how long RealTime mode polls Stats for the
	// expected counts (default 10s).
	StatsTimeout time.Duration
}

// queueSuite carries the options through the subtests.
type queueSuite struct {
	opts QueueSuiteOptions
}

// TestQueue runs the Queue contract. newQueue must return a new, empty queue
// that reads time from clock, with visibility timeout
// SuiteVisibilityTimeout, redrive limit SuiteRedriveLimit and the 5-minute
// deduplication window. Subtests run in parallel.
func TestQueue(t *testing.T, newQueue func(t *testing.T, clock *Clock) Queue) {
	TestQueueWith(t, newQueue, QueueSuiteOptions{})
}

// TestQueueWith runs the Queue contract as TestQueue does, adapted by opts.
// In RealTime mode newQueue must return a new, empty queue with visibility
// timeout opts.VisibilityTimeout (default RealTimeVisibilityTimeout),
// redrive limit SuiteRedriveLimit and the 5-minute deduplication window; it
// may ignore clock, which then only dates the requests. Subtests run in
// parallel.
func TestQueueWith(t *testing.T, newQueue func(t *testing.T, clock *Clock) Queue, opts QueueSuiteOptions) {
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = RealTimeVisibilityTimeout
	}
	if opts.StatsTimeout <= 0 {
		opts.StatsTimeout = 10 * time.Second
	}
	s := &queueSuite{opts: opts}
	vt := s.visibilityTimeout()

	t.Run("publish receive delete", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		ctx := t.Context()
		r := newRequest(clock, "ae6rt", "dynamodb-lab", "master")
		before := time.Now()
		publish(t, q, r)
		after := time.Now()

		receivedAt := time.Now()
		got := receive(t, q, 10)
		if len(got) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(got))
		}
		m := got[0]
		if m.ID == "" || m.Receipt == "" {
			t.Errorf("Receive() message ID %q, receipt %q; want both set", m.ID, m.Receipt)
		}
		if m.GroupID != r.LockKey() {
			t.Errorf("GroupID = %q, want %q", m.GroupID, r.LockKey())
		}
		if m.ReceiveCount != 1 {
			t.Errorf("ReceiveCount = %d, want 1", m.ReceiveCount)
		}
		s.checkSentAt(t, m, clock, before, after)
		body, err := build.Decode(m.Body)
		if err != nil {
			t.Fatalf("Decode(body) error = %v", err)
		}
		if diff := cmp.Diff(r, body); diff != "" {
			t.Errorf("decoded body differs from the published request (-want +got):\n%s", diff)
		}

		if got := receive(t, q, 10); len(got) != 0 && s.inFlight(receivedAt) {
			t.Errorf("second Receive() returned %d messages, want 0 (message in flight)", len(got))
		}
		if err := q.Delete(ctx, m.Receipt); err != nil {
			t.Fatalf("Delete() error = %v", err)
		}
		s.checkStaleReceipt(t, "Delete() of a deleted message", q.Delete(ctx, m.Receipt))
		if got := s.receiveAfter(t, q, clock, 2*vt, 10); len(got) != 0 {
			t.Errorf("Receive() after Delete returned %d messages, want 0", len(got))
		}
		s.checkStats(t, q, build.QueueStats{})
	})

	t.Run("receive from empty queue", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, s.newClock())
		if got := receive(t, q, 10); len(got) != 0 {
			t.Errorf("Receive() = %d messages, want 0", len(got))
		}
	})

	t.Run("publish rejects an invalid request and publishes nothing", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		good := newRequest(clock, "ae6rt", "p", "main")
		bad := newRequest(clock, "ae6rt", "p", "bad..ref")
		if err := q.Publish(t.Context(), good, bad); !errors.Is(err, build.ErrInvalid) {
			t.Fatalf("Publish() error = %v, want ErrInvalid", err)
		}
		if got := receive(t, q, 10); len(got) != 0 {
			t.Errorf("Receive() after failed Publish = %d messages, want 0", len(got))
		}
	})

	t.Run("group order", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		r1 := newRequest(clock, "ae6rt", "p", "main")
		r2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, r1, r2)

		receivedAt := time.Now()
		got := receive(t, q, 10)
		n := s.checkHead(t, "first Receive()", got, []build.ID{r1.BuildID, r2.BuildID})
		if again := receive(t, q, 10); len(again) != 0 {
			if !s.inFlight(receivedAt) {
				t.Skipf("the calls took longer than the visibility timeout (%s): the group's first message is visible again", s.visibilityTimeout())
			}
			t.Fatalf("Receive() while the group's first message is in flight = %v, want none", bodyIDs(t, again))
		}
		deleteAll(t, q, got)
		got = receive(t, q, 10)
		if n == 2 {
			if len(got) != 0 {
				t.Fatalf("Receive() after deleting the whole group = %v, want none", bodyIDs(t, got))
			}
			return
		}
		if diff := cmp.Diff([]build.ID{r2.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive() after Delete (-want +got):\n%s", diff)
		}
	})

	t.Run("other groups are not blocked", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		b1 := newRequest(clock, "ae6rt", "p", "feature/x")
		publish(t, q, a1, a2)

		receivedAt := time.Now()
		first := receive(t, q, 1)
		if diff := cmp.Diff([]build.ID{a1.BuildID}, bodyIDs(t, first)); diff != "" {
			t.Fatalf("Receive(1) (-want +got):\n%s", diff)
		}
		publish(t, q, b1)
		second := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{b1.BuildID}, bodyIDs(t, second)); diff != "" && s.inFlight(receivedAt) {
			t.Fatalf("Receive() with group a in flight (-want +got):\n%s", diff)
		}
		deleteAll(t, q, second)
		if got := receive(t, q, 10); len(got) != 0 {
			if !s.inFlight(receivedAt) {
				t.Skipf("the calls took longer than the visibility timeout (%s): a1 is visible again", s.visibilityTimeout())
			}
			t.Fatalf("Receive() = %v, want none: a2 waits behind a1", bodyIDs(t, got))
		}
		deleteAll(t, q, first)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, receive(t, q, 10))); diff != "" {
			t.Fatalf("Receive() after deleting a1 (-want +got):\n%s", diff)
		}
	})

	t.Run("one message per group per receive, at most max", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		published := map[string][]build.ID{}
		for _, ref := range []string{"r1", "r2", "r3", "r4", "r5"} {
			r1, r2 := newRequest(clock, "ae6rt", "p", ref), newRequest(clock, "ae6rt", "p", ref)
			publish(t, q, r1, r2)
			published[r1.LockKey()] = []build.ID{r1.BuildID, r2.BuildID}
		}
		delivered := map[string]int{} // group → how many of its messages were received
		take := func(msgs []build.Message, max int) {
			t.Helper()
			if len(msgs) > max {
				t.Fatalf("Receive(%d) returned %d messages", max, len(msgs))
			}
			inBatch := map[string]bool{}
			for _, m := range msgs {
				ids := bodyIDs(t, []build.Message{m})
				want := published[m.GroupID]
				n := delivered[m.GroupID]
				switch {
				case n > 0 && !inBatch[m.GroupID]:
					t.Fatalf("message %s of group %s received while an earlier one is in flight", ids[0], m.GroupID)
				case inBatch[m.GroupID] && !s.opts.RealTime:
					t.Fatalf("two messages of group %s in one Receive", m.GroupID)
				case n >= len(want) || want[n] != ids[0]:
					t.Fatalf("group %s: received %s as message %d, want publish order %v", m.GroupID, ids[0], n+1, want)
				}
				inBatch[m.GroupID] = true
				delivered[m.GroupID]++
			}
		}
		first := receive(t, q, 2)
		if len(first) == 0 || (!s.opts.RealTime && len(first) != 2) {
			t.Fatalf("Receive(2) returned %d messages, want 2", len(first))
		}
		take(first, 2)
		for range 10 {
			rest := receive(t, q, 10)
			if len(rest) == 0 {
				break
			}
			take(rest, 10)
		}
		for group := range published {
			if delivered[group] == 0 {
				t.Errorf("group %s: nothing received, want its first message", group)
			}
			if !s.opts.RealTime && delivered[group] != 1 {
				t.Errorf("group %s: received %d messages, want 1", group, delivered[group])
			}
		}
	})

	t.Run("visibility timeout", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		ctx := t.Context()
		publish(t, q, newRequest(clock, "ae6rt", "p", "main"))
		first := receive(t, q, 10)
		start := time.Now()
		if len(first) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(first))
		}
		again := s.reappearAfter(t, q, clock, start, vt)
		if len(again) != 1 {
			t.Fatalf("Receive() after the visibility timeout returned %d messages, want 1", len(again))
		}
		if again[0].ID != first[0].ID {
			t.Errorf("redelivered ID = %q, want %q", again[0].ID, first[0].ID)
		}
		if again[0].ReceiveCount != 2 {
			t.Errorf("redelivered ReceiveCount = %d, want 2", again[0].ReceiveCount)
		}
		if again[0].Receipt == first[0].Receipt {
			t.Errorf("redelivered Receipt = first Receipt %q, want a new one", again[0].Receipt)
		}
		if !again[0].SentAt.Equal(first[0].SentAt) {
			t.Errorf("redelivered SentAt = %v, want %v", again[0].SentAt, first[0].SentAt)
		}
		s.checkStaleReceipt(t, "Delete(stale receipt)", q.Delete(ctx, first[0].Receipt))
		s.checkStaleReceipt(t, "ChangeVisibility(stale receipt)", q.ChangeVisibility(ctx, first[0].Receipt, 0))
		if err := q.Delete(ctx, again[0].Receipt); err != nil {
			t.Errorf("Delete(current receipt) error = %v", err)
		}
	})

	t.Run("unknown receipt", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, s.newClock())
		ctx := t.Context()
		if err := q.Delete(ctx, "no-such-receipt"); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete() error = %v, want ErrNotFound", err)
		}
		if err := q.ChangeVisibility(ctx, "no-such-receipt", time.Second); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("ChangeVisibility() error = %v, want ErrNotFound", err)
		}
	})

	t.Run("change visibility defers the group", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		ctx := t.Context()
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		got := receive(t, q, 10)
		n := s.checkHead(t, "Receive()", got, []build.ID{a1.BuildID, a2.BuildID})
		deferral := 10 * time.Second
		if s.opts.RealTime {
			// Longer than the visibility timeout, and long enough that
			// the calls below end before it on a busy machine (they
			// took over 3 s once on moto).
			deferral = vt + 6*time.Second
		}
		if err := q.ChangeVisibility(ctx, got[0].Receipt, deferral); err != nil {
			t.Fatalf("ChangeVisibility() error = %v", err)
		}
		start := time.Now()
		// As the dispatcher does: a1 is deferred, so a2, received with it,
		// goes back at once and must wait behind a1.
		for _, m := range got[1:] {
			if err := q.ChangeVisibility(ctx, m.Receipt, 0); err != nil {
				t.Fatalf("ChangeVisibility(0) of a2 error = %v", err)
			}
		}
		s.checkStats(t, q, build.QueueStats{Visible: 1, InFlight: 1})
		if again := receive(t, q, 10); len(again) != 0 {
			t.Fatalf("Receive() while deferred = %v, want none", bodyIDs(t, again))
		}
		again := s.reappearAfter(t, q, clock, start, deferral)
		m := s.checkHead(t, "Receive() after the deferral", again, []build.ID{a1.BuildID, a2.BuildID})
		if again[0].ReceiveCount != 2 {
			t.Errorf("ReceiveCount = %d, want 2", again[0].ReceiveCount)
		}
		s.checkStaleReceipt(t, "ChangeVisibility(stale receipt)", q.ChangeVisibility(ctx, got[0].Receipt, time.Second))
		deleteAll(t, q, again)
		if m == 2 {
			return
		}
		last := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, last)); diff != "" {
			t.Fatalf("Receive() after deleting a1 (-want +got):\n%s", diff)
		}
		// a2 was received once before if it came with a1 the first time.
		if last[0].ReceiveCount != n {
			t.Errorf("a2 ReceiveCount = %d, want %d", last[0].ReceiveCount, n)
		}
	})

	t.Run("change visibility zero releases at once", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		publish(t, q, newRequest(clock, "ae6rt", "p", "main"))
		got := receive(t, q, 10)
		if len(got) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(got))
		}
		if err := q.ChangeVisibility(t.Context(), got[0].Receipt, 0); err != nil {
			t.Fatalf("ChangeVisibility(0) error = %v", err)
		}
		again := receive(t, q, 10)
		if len(again) != 1 || again[0].ID != got[0].ID || again[0].ReceiveCount != 2 {
			t.Fatalf("Receive() after ChangeVisibility(0) = %+v, want message %s with ReceiveCount 2", again, got[0].ID)
		}
	})

	t.Run("deduplication window", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		r := newRequest(clock, "ae6rt", "p", "main")
		r.DeliveryID = "delivery-1"
		other := newRequest(clock, "ae6rt", "p", "main")
		other.DeliveryID = "delivery-2"
		publish(t, q, r, r)
		publish(t, q, r, other)
		s.checkStats(t, q, build.QueueStats{Visible: 2})
		publish(t, q, r)
		if diff := cmp.Diff([]build.ID{r.BuildID, other.BuildID}, drain(t, q)); diff != "" {
			t.Fatalf("received after publishing r, r, r, other, r (-want +got):\n%s", diff)
		}
	})

	t.Run("deduplication ends after the window", func(t *testing.T) {
		t.Parallel()
		if s.opts.RealTime {
			t.Skip("RealTime mode: the deduplication window lasts 5 minutes of the queue's clock")
		}
		clock := s.newClock()
		q := newQueue(t, clock)
		r := newRequest(clock, "ae6rt", "p", "main")
		r.DeliveryID = "delivery-1"
		publish(t, q, r)
		drain(t, q)

		clock.Advance(DedupWindow - time.Minute)
		publish(t, q, r)
		if got := receive(t, q, 10); len(got) != 0 {
			t.Fatalf("Receive() after a duplicate within the window of a deleted message = %v, want none", bodyIDs(t, got))
		}
		checkStats(t, q, build.QueueStats{})

		clock.Advance(time.Minute + time.Second)
		publish(t, q, r)
		got := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{r.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive() after the dedup window (-want +got):\n%s", diff)
		}
	})

	t.Run("dead letter", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		got := receive(t, q, 1)
		if diff := cmp.Diff([]build.ID{a1.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive(1) (-want +got):\n%s", diff)
		}
		if err := q.DeadLetter(t.Context(), got[0], "malformed body"); err != nil {
			t.Fatalf("DeadLetter() error = %v", err)
		}
		s.checkStats(t, q, build.QueueStats{Visible: 1, DeadLettered: 1})
		s.checkStaleReceipt(t, "Delete() of a dead-lettered message", q.Delete(t.Context(), got[0].Receipt))
		next := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, next)); diff != "" {
			t.Fatalf("Receive() after DeadLetter (-want +got):\n%s", diff)
		}
	})

	t.Run("dead letter of a deleted message", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		publish(t, q, newRequest(clock, "ae6rt", "p", "main"))
		got := receive(t, q, 1)
		if len(got) != 1 {
			t.Fatalf("Receive(1) returned %d messages, want 1", len(got))
		}
		deleteAll(t, q, got)
		err := q.DeadLetter(t.Context(), got[0], "too late")
		s.checkStaleReceipt(t, "DeadLetter() of a deleted message", err)
		if err != nil {
			s.checkStats(t, q, build.QueueStats{})
		}
	})

	t.Run("redrive limit", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		for i := 1; i <= SuiteRedriveLimit; i++ {
			// One at a time, so that only a1 counts receives.
			got := receive(t, q, 1)
			if len(got) != 1 || got[0].ID == "" || got[0].ReceiveCount != i {
				t.Fatalf("receive %d = %+v, want a1 with ReceiveCount %d", i, got, i)
			}
			if diff := cmp.Diff([]build.ID{a1.BuildID}, bodyIDs(t, got)); diff != "" {
				t.Fatalf("receive %d (-want +got):\n%s", i, diff)
			}
			if err := q.ChangeVisibility(t.Context(), got[0].Receipt, 0); err != nil {
				t.Fatalf("ChangeVisibility() error = %v", err)
			}
		}
		got := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive() past the redrive limit (-want +got):\n%s", diff)
		}
		s.checkStats(t, q, build.QueueStats{InFlight: 1, DeadLettered: 1})
	})

	t.Run("stats", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		s.checkStats(t, q, build.QueueStats{})
		publish(t, q,
			newRequest(clock, "ae6rt", "p", "main"),
			newRequest(clock, "ae6rt", "p", "main"),
			newRequest(clock, "ae6rt", "p", "dev"))
		clock.Advance(10 * time.Second) // RealTime mode: no effect on the queue; OldestAge is loose
		publish(t, q, newRequest(clock, "ae6rt", "q", "main"))
		s.checkStats(t, q, build.QueueStats{Visible: 4, OldestAge: 10 * time.Second})

		got := receive(t, q, 2)
		if len(got) != 2 {
			t.Fatalf("Receive(2) returned %d messages, want 2", len(got))
		}
		clock.Advance(5 * time.Second)
		s.checkStats(t, q, build.QueueStats{Visible: 2, InFlight: 2, OldestAge: 15 * time.Second})
		if err := q.DeadLetter(t.Context(), got[1], "test"); err != nil {
			t.Fatalf("DeadLetter() error = %v", err)
		}
		s.checkStats(t, q, build.QueueStats{Visible: 2, InFlight: 1, DeadLettered: 1, OldestAge: 15 * time.Second})
		deleteAll(t, q, got[:1])
		drain(t, q)
		s.checkStats(t, q, build.QueueStats{DeadLettered: 1})
	})

	t.Run("concurrent receivers get each message once", func(t *testing.T) {
		t.Parallel()
		clock := s.newClock()
		q := newQueue(t, clock)
		var want []string
		for i := range 40 {
			r := newRequest(clock, "ae6rt", "p", fmt.Sprintf("ref-%d", i))
			publish(t, q, r)
			want = append(want, string(r.BuildID))
		}
		var mu sync.Mutex
		var got []string
		var wg sync.WaitGroup
		// Until every message came, or a minute: an empty answer does not
		// end a receiver, since on SQS a receive whose answer was lost on
		// the way (a loaded moto) leaves its messages in flight until their
		// visibility timeout ends. A message received twice still shows.
		deadline := time.Now().Add(time.Minute)
		all := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= len(want)
		}
		for range 4 {
			wg.Go(func() {
				for !all() && time.Now().Before(deadline) {
					msgs, err := q.Receive(t.Context(), 3, 0)
					if err != nil {
						t.Errorf("Receive() error = %v", err)
						return
					}
					if len(msgs) == 0 {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					for _, m := range msgs {
						r, err := build.Decode(m.Body)
						if err != nil {
							t.Errorf("Decode() error = %v", err)
						}
						mu.Lock()
						got = append(got, string(r.BuildID))
						mu.Unlock()
						if err := q.Delete(t.Context(), m.Receipt); err != nil {
							t.Errorf("Delete() error = %v", err)
						}
					}
				}
			})
		}
		wg.Wait()
		slices.Sort(got)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("received messages (-want +got):\n%s", diff)
		}
	})

	t.Run("long poll", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name string
			// setup prepares q and returns what makes a message available.
			setup func(t *testing.T, q Queue, clock *Clock) (trigger func(), want build.ID)
		}{
			{
				name: "publish wakes a waiting receive",
				setup: func(t *testing.T, q Queue, clock *Clock) (func(), build.ID) {
					r := newRequest(clock, "ae6rt", "p", "main")
					return func() { publish(t, q, r) }, r.BuildID
				},
			},
			{
				name: "change visibility zero wakes a waiting receive",
				setup: func(t *testing.T, q Queue, clock *Clock) (func(), build.ID) {
					r := newRequest(clock, "ae6rt", "p", "main")
					publish(t, q, r)
					got := receive(t, q, 1)
					if len(got) != 1 {
						t.Fatalf("Receive() returned %d messages, want 1", len(got))
					}
					return func() {
						if err := q.ChangeVisibility(t.Context(), got[0].Receipt, 0); err != nil {
							t.Errorf("ChangeVisibility() error = %v", err)
						}
					}, r.BuildID
				},
			},
			{
				name: "delete wakes a receive waiting for the group",
				setup: func(t *testing.T, q Queue, clock *Clock) (func(), build.ID) {
					r1 := newRequest(clock, "ae6rt", "p", "main")
					r2 := newRequest(clock, "ae6rt", "p", "main")
					publish(t, q, r1, r2)
					got := receive(t, q, 1)
					if len(got) != 1 {
						t.Fatalf("Receive() returned %d messages, want 1", len(got))
					}
					return func() { deleteAll(t, q, got) }, r2.BuildID
				},
			},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				clock := s.newClock()
				q := newQueue(t, clock)
				trigger, want := tc.setup(t, q, clock)
				type result struct {
					msgs []build.Message
					err  error
				}
				done := make(chan result, 1)
				go func() {
					msgs, err := q.Receive(t.Context(), 10, 30*time.Second)
					done <- result{msgs, err}
				}()
				time.Sleep(100 * time.Millisecond) // let Receive start waiting; correctness does not depend on it
				start := time.Now()
				trigger()
				select {
				case res := <-done:
					if res.err != nil {
						t.Fatalf("Receive() error = %v", res.err)
					}
					if diff := cmp.Diff([]build.ID{want}, bodyIDs(t, res.msgs)); diff != "" {
						t.Fatalf("Receive() (-want +got):\n%s", diff)
					}
				case <-time.After(promptly):
					t.Fatalf("Receive() still waiting %v after the message became available", time.Since(start).Round(time.Millisecond))
				}
			})
		}
	})

	t.Run("long poll returns empty after wait", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, s.newClock())
		const wait = time.Second
		start := time.Now()
		got, err := q.Receive(t.Context(), 10, wait)
		elapsed := time.Since(start)
		if err != nil || len(got) != 0 {
			t.Fatalf("Receive() = %d messages, error %v; want none, nil", len(got), err)
		}
		if elapsed < wait-50*time.Millisecond || elapsed > wait+promptly {
			t.Errorf("Receive(wait %v) returned after %v", wait, elapsed)
		}
	})

	t.Run("long poll ends with the context", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, s.newClock())
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		got, err := q.Receive(ctx, 10, 30*time.Second)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Receive() = %d messages, error %v; want context.Canceled", len(got), err)
		}
		if elapsed := time.Since(start); elapsed > promptly {
			t.Errorf("Receive() returned %v after its context ended", elapsed)
		}
	})
}

// visibilityTimeout is the visibility timeout the queue under test has.
// inFlight reports whether messages received by a call made at since are
// surely still in flight: always on the suite's clock; in RealTime mode
// only while less than the visibility timeout has passed since, as on a
// loaded machine the calls in between may take longer (moto answered in
// seconds under CI's load), and the messages are then visible again by
// right. An assertion that a message is in flight holds only then.
func (s *queueSuite) inFlight(since time.Time) bool {
	return !s.opts.RealTime || time.Since(since) < s.visibilityTimeout()
}

func (s *queueSuite) visibilityTimeout() time.Duration {
	if s.opts.RealTime {
		return s.opts.VisibilityTimeout
	}
	return SuiteVisibilityTimeout
}

// newClock returns the clock for one subtest: the fixed default start, or
// in RealTime mode the current time, so requests are dated sensibly.
func (s *queueSuite) newClock() *Clock {
	if s.opts.RealTime {
		return NewClock(time.Now().UTC())
	}
	return NewClock(time.Time{})
}

// receiveAfter lets d pass and receives up to n messages: by advancing the
// clock, or in RealTime mode by long-polling for d, so that a message that
// shows up meanwhile is returned (and fails a test expecting none).
func (s *queueSuite) receiveAfter(t *testing.T, q Queue, clock *Clock, d time.Duration, n int) []build.Message {
	t.Helper()
	if !s.opts.RealTime {
		clock.Advance(d)
		return receive(t, q, n)
	}
	msgs, err := q.Receive(t.Context(), n, d)
	if err != nil {
		t.Fatalf("Receive() error = %v", err)
	}
	return msgs
}

// reappearAfter receives a message that became invisible at start for d. It
// fails unless nothing is receivable shortly before d and the message is
// receivable shortly after: in the default mode one second either side by
// the clock, in RealTime mode by long-polling and timing the wait.
func (s *queueSuite) reappearAfter(t *testing.T, q Queue, clock *Clock, start time.Time, d time.Duration) []build.Message {
	t.Helper()
	if !s.opts.RealTime {
		clock.Advance(d - time.Second)
		if got := receive(t, q, 10); len(got) != 0 {
			t.Fatalf("Receive() 1s before the message is due = %v, want none", bodyIDs(t, got))
		}
		clock.Advance(2 * time.Second)
		return receive(t, q, 10)
	}
	got, err := q.Receive(t.Context(), 10, d+promptly)
	if err != nil {
		t.Fatalf("Receive() error = %v", err)
	}
	elapsed := time.Since(start)
	if len(got) > 0 && elapsed < d-early {
		t.Fatalf("Receive() returned %v after %v, want nothing before %v", bodyIDs(t, got), elapsed.Round(time.Millisecond), d)
	}
	return got
}

// checkHead checks that got starts a group whose messages are want, in
// order: exactly its first message, or in RealTime mode one or more of its
// first messages. It returns how many were received.
func (s *queueSuite) checkHead(t *testing.T, what string, got []build.Message, want []build.ID) int {
	t.Helper()
	ids := bodyIDs(t, got)
	n := len(ids)
	if !s.opts.RealTime || n == 0 || n > len(want) {
		n = 1
	}
	if diff := cmp.Diff(want[:n], ids); diff != "" {
		t.Fatalf("%s (-want +got):\n%s", what, diff)
	}
	return n
}

// checkSentAt checks m.SentAt: the clock's time, or in RealTime mode the
// wall-clock time of the publish, give or take clockSkew.
func (s *queueSuite) checkSentAt(t *testing.T, m build.Message, clock *Clock, before, after time.Time) {
	t.Helper()
	if !s.opts.RealTime {
		if !m.SentAt.Equal(clock.Now()) {
			t.Errorf("SentAt = %v, want %v", m.SentAt, clock.Now())
		}
		return
	}
	if m.SentAt.Before(before.Add(-clockSkew)) || m.SentAt.After(after.Add(clockSkew)) {
		t.Errorf("SentAt = %v, want between %v and %v (publish time ± %v)", m.SentAt, before, after, clockSkew)
	}
}

// checkStaleReceipt checks the error of a call with a stale receipt:
// ErrNotFound, or with LenientReceipts also nil.
func (s *queueSuite) checkStaleReceipt(t *testing.T, what string, err error) {
	t.Helper()
	if errors.Is(err, build.ErrNotFound) || (err == nil && s.opts.LenientReceipts) {
		return
	}
	t.Errorf("%s error = %v, want ErrNotFound", what, err)
}

// checkStats compares Stats with want: exactly, or in RealTime mode by
// polling until the counts match, with OldestAge only required to be >= 0.
func (s *queueSuite) checkStats(t *testing.T, q Queue, want build.QueueStats) {
	t.Helper()
	if !s.opts.RealTime {
		checkStats(t, q, want)
		return
	}
	deadline := time.Now().Add(s.opts.StatsTimeout)
	for {
		got, err := q.Stats(t.Context())
		if err != nil {
			t.Fatalf("Stats() error = %v", err)
		}
		if got.OldestAge < 0 {
			t.Fatalf("Stats().OldestAge = %v, want >= 0", got.OldestAge)
		}
		got.OldestAge, want.OldestAge = 0, 0
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats() after %v, OldestAge ignored (-want +got):\n%s", s.opts.StatsTimeout, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newRequest returns a valid push request with a fresh build ID.
func newRequest(clock *Clock, team, project, ref string) build.Request {
	return build.Request{
		V:           build.MessageVersion,
		BuildID:     build.NewID(clock.Now()),
		Team:        team,
		Project:     project,
		Ref:         ref,
		RefType:     build.Branch,
		SHA:         "0123456789abcdef0123456789abcdef01234567",
		Trigger:     build.TriggerPush,
		RequestedBy: "octocat",
		RequestedAt: clock.Now().UTC(),
	}
}

func publish(t *testing.T, q Queue, reqs ...build.Request) {
	t.Helper()
	if err := q.Publish(t.Context(), reqs...); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
}

// receive receives without waiting.
//
// An empty answer is asked again twice, 20 ms apart: a short poll of SQS
// may answer nothing while a message is there (it samples a subset of
// SQS's servers), and moto under CI's load has done so right after a
// publish and right after a group's previous message left. A check that
// wants nothing still gets nothing.
func receive(t *testing.T, q Queue, n int) []build.Message {
	t.Helper()
	for try := 0; ; try++ {
		msgs, err := q.Receive(t.Context(), n, 0)
		if err != nil {
			t.Fatalf("Receive() error = %v", err)
		}
		if len(msgs) > 0 || try == 2 {
			return msgs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deleteAll(t *testing.T, q Queue, msgs []build.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := q.Delete(t.Context(), m.Receipt); err != nil {
			t.Fatalf("Delete(%s) error = %v", m.ID, err)
		}
	}
}

// drain receives and deletes until the queue returns nothing, and returns
// the build IDs it received, in order.
func drain(t *testing.T, q Queue) []build.ID {
	t.Helper()
	ids := []build.ID{}
	for {
		msgs := receive(t, q, 10)
		if len(msgs) == 0 {
			return ids
		}
		ids = append(ids, bodyIDs(t, msgs)...)
		deleteAll(t, q, msgs)
	}
}

// bodyIDs decodes the messages' bodies and returns their build IDs.
func bodyIDs(t *testing.T, msgs []build.Message) []build.ID {
	t.Helper()
	ids := []build.ID{}
	for _, m := range msgs {
		r, err := build.Decode(m.Body)
		if err != nil {
			t.Fatalf("Decode(body of %s) error = %v", m.ID, err)
		}
		ids = append(ids, r.BuildID)
	}
	return ids
}

func checkStats(t *testing.T, q Queue, want build.QueueStats) {
	t.Helper()
	got, err := q.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats() error = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats() (-want +got):\n%s", diff)
	}
}
