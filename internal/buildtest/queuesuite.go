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
)

// promptly bounds how long a woken Receive may take to return. Wake-ups take
// milliseconds; the bound is loose for loaded machines but below the 5 s
// fallback recheck of the SQLite adapter, so a missing wake-up fails.
const promptly = 4 * time.Second

// TestQueue runs the Queue contract. newQueue must return a new, empty queue
// that reads time from clock, with visibility timeout
// SuiteVisibilityTimeout, redrive limit SuiteRedriveLimit and the 5-minute
// deduplication window. Subtests run in parallel.
func TestQueue(t *testing.T, newQueue func(t *testing.T, clock *Clock) Queue) {
	t.Run("publish receive delete", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		ctx := t.Context()
		r := newRequest(clock, "ae6rt", "dynamodb-lab", "master")
		publish(t, q, r)

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
		if !m.SentAt.Equal(clock.Now()) {
			t.Errorf("SentAt = %v, want %v", m.SentAt, clock.Now())
		}
		body, err := build.Decode(m.Body)
		if err != nil {
			t.Fatalf("Decode(body) error = %v", err)
		}
		if diff := cmp.Diff(r, body); diff != "" {
			t.Errorf("decoded body differs from the published request (-want +got):\n%s", diff)
		}

		if got := receive(t, q, 10); len(got) != 0 {
			t.Errorf("second Receive() returned %d messages, want 0 (message in flight)", len(got))
		}
		if err := q.Delete(ctx, m.Receipt); err != nil {
			t.Fatalf("Delete() error = %v", err)
		}
		if err := q.Delete(ctx, m.Receipt); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete() of a deleted message error = %v, want ErrNotFound", err)
		}
		clock.Advance(2 * SuiteVisibilityTimeout)
		if got := receive(t, q, 10); len(got) != 0 {
			t.Errorf("Receive() after Delete returned %d messages, want 0", len(got))
		}
		checkStats(t, q, build.QueueStats{})
	})

	t.Run("receive from empty queue", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, NewClock(time.Time{}))
		if got := receive(t, q, 10); len(got) != 0 {
			t.Errorf("Receive() = %d messages, want 0", len(got))
		}
	})

	t.Run("publish rejects an invalid request and publishes nothing", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
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
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		r1 := newRequest(clock, "ae6rt", "p", "main")
		r2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, r1, r2)

		got := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{r1.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("first Receive() (-want +got):\n%s", diff)
		}
		if again := receive(t, q, 10); len(again) != 0 {
			t.Fatalf("Receive() while the group's first message is in flight = %v, want none", bodyIDs(t, again))
		}
		deleteAll(t, q, got)
		got = receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{r2.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive() after Delete (-want +got):\n%s", diff)
		}
	})

	t.Run("other groups are not blocked", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		b1 := newRequest(clock, "ae6rt", "p", "feature/x")
		publish(t, q, a1, a2, b1)

		first := receive(t, q, 1)
		if diff := cmp.Diff([]build.ID{a1.BuildID}, bodyIDs(t, first)); diff != "" {
			t.Fatalf("Receive(1) (-want +got):\n%s", diff)
		}
		second := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{b1.BuildID}, bodyIDs(t, second)); diff != "" {
			t.Fatalf("Receive() with group a in flight (-want +got):\n%s", diff)
		}
		deleteAll(t, q, second)
		if got := receive(t, q, 10); len(got) != 0 {
			t.Fatalf("Receive() = %v, want none: a2 waits behind a1", bodyIDs(t, got))
		}
		deleteAll(t, q, first)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, receive(t, q, 10))); diff != "" {
			t.Fatalf("Receive() after deleting a1 (-want +got):\n%s", diff)
		}
	})

	t.Run("one message per group per receive, at most max", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		var want []build.ID
		for _, ref := range []string{"r1", "r2", "r3", "r4", "r5"} {
			r := newRequest(clock, "ae6rt", "p", ref)
			publish(t, q, r, newRequest(clock, "ae6rt", "p", ref))
			want = append(want, r.BuildID)
		}
		first := receive(t, q, 2)
		if len(first) != 2 {
			t.Fatalf("Receive(2) returned %d messages, want 2", len(first))
		}
		rest := receive(t, q, 10)
		got := append(bodyIDs(t, first), bodyIDs(t, rest)...)
		slices.Sort(got)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("received the first message of each group (-want +got):\n%s", diff)
		}
	})

	t.Run("visibility timeout", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		ctx := t.Context()
		publish(t, q, newRequest(clock, "ae6rt", "p", "main"))
		first := receive(t, q, 10)
		if len(first) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(first))
		}
		clock.Advance(SuiteVisibilityTimeout - time.Second)
		if got := receive(t, q, 10); len(got) != 0 {
			t.Fatalf("Receive() before the visibility timeout = %d messages, want 0", len(got))
		}
		clock.Advance(2 * time.Second)
		again := receive(t, q, 10)
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
		if err := q.Delete(ctx, first[0].Receipt); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete(stale receipt) error = %v, want ErrNotFound", err)
		}
		if err := q.ChangeVisibility(ctx, first[0].Receipt, 0); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("ChangeVisibility(stale receipt) error = %v, want ErrNotFound", err)
		}
		if err := q.Delete(ctx, again[0].Receipt); err != nil {
			t.Errorf("Delete(current receipt) error = %v", err)
		}
	})

	t.Run("unknown receipt", func(t *testing.T) {
		t.Parallel()
		q := newQueue(t, NewClock(time.Time{}))
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
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		ctx := t.Context()
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		got := receive(t, q, 10)
		if len(got) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(got))
		}
		if err := q.ChangeVisibility(ctx, got[0].Receipt, 10*time.Second); err != nil {
			t.Fatalf("ChangeVisibility() error = %v", err)
		}
		checkStats(t, q, build.QueueStats{Visible: 1, InFlight: 1})
		if again := receive(t, q, 10); len(again) != 0 {
			t.Fatalf("Receive() while deferred = %v, want none", bodyIDs(t, again))
		}
		clock.Advance(9 * time.Second)
		if again := receive(t, q, 10); len(again) != 0 {
			t.Fatalf("Receive() 9s into a 10s deferral = %v, want none", bodyIDs(t, again))
		}
		clock.Advance(2 * time.Second)
		again := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a1.BuildID}, bodyIDs(t, again)); diff != "" {
			t.Fatalf("Receive() after the deferral (-want +got):\n%s", diff)
		}
		if again[0].ReceiveCount != 2 {
			t.Errorf("ReceiveCount = %d, want 2", again[0].ReceiveCount)
		}
		if err := q.ChangeVisibility(ctx, got[0].Receipt, time.Second); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("ChangeVisibility(stale receipt) error = %v, want ErrNotFound", err)
		}
		deleteAll(t, q, again)
		last := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, last)); diff != "" {
			t.Fatalf("Receive() after deleting a1 (-want +got):\n%s", diff)
		}
		if last[0].ReceiveCount != 1 {
			t.Errorf("a2 ReceiveCount = %d, want 1", last[0].ReceiveCount)
		}
	})

	t.Run("change visibility zero releases at once", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
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
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		r := newRequest(clock, "ae6rt", "p", "main")
		r.DeliveryID = "delivery-1"
		other := newRequest(clock, "ae6rt", "p", "main")
		other.DeliveryID = "delivery-2"
		publish(t, q, r, r)
		publish(t, q, r, other)
		checkStats(t, q, build.QueueStats{Visible: 2})
		drain(t, q)

		clock.Advance(DedupWindow - time.Minute)
		publish(t, q, r)
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
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		got := receive(t, q, 10)
		if len(got) != 1 {
			t.Fatalf("Receive() returned %d messages, want 1", len(got))
		}
		if err := q.DeadLetter(t.Context(), got[0], "malformed body"); err != nil {
			t.Fatalf("DeadLetter() error = %v", err)
		}
		checkStats(t, q, build.QueueStats{Visible: 1, DeadLettered: 1})
		if err := q.Delete(t.Context(), got[0].Receipt); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete() of a dead-lettered message error = %v, want ErrNotFound", err)
		}
		next := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, next)); diff != "" {
			t.Fatalf("Receive() after DeadLetter (-want +got):\n%s", diff)
		}
	})

	t.Run("redrive limit", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		a1 := newRequest(clock, "ae6rt", "p", "main")
		a2 := newRequest(clock, "ae6rt", "p", "main")
		publish(t, q, a1, a2)
		for i := 1; i <= SuiteRedriveLimit; i++ {
			got := receive(t, q, 10)
			if len(got) != 1 || got[0].ReceiveCount != i {
				t.Fatalf("receive %d = %+v, want a1 with ReceiveCount %d", i, got, i)
			}
			if err := q.ChangeVisibility(t.Context(), got[0].Receipt, 0); err != nil {
				t.Fatalf("ChangeVisibility() error = %v", err)
			}
		}
		got := receive(t, q, 10)
		if diff := cmp.Diff([]build.ID{a2.BuildID}, bodyIDs(t, got)); diff != "" {
			t.Fatalf("Receive() past the redrive limit (-want +got):\n%s", diff)
		}
		checkStats(t, q, build.QueueStats{InFlight: 1, DeadLettered: 1})
	})

	t.Run("stats", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
		q := newQueue(t, clock)
		checkStats(t, q, build.QueueStats{})
		publish(t, q,
			newRequest(clock, "ae6rt", "p", "main"),
			newRequest(clock, "ae6rt", "p", "main"),
			newRequest(clock, "ae6rt", "p", "dev"))
		clock.Advance(10 * time.Second)
		publish(t, q, newRequest(clock, "ae6rt", "q", "main"))
		checkStats(t, q, build.QueueStats{Visible: 4, OldestAge: 10 * time.Second})

		got := receive(t, q, 2)
		if len(got) != 2 {
			t.Fatalf("Receive(2) returned %d messages, want 2", len(got))
		}
		clock.Advance(5 * time.Second)
		checkStats(t, q, build.QueueStats{Visible: 2, InFlight: 2, OldestAge: 15 * time.Second})
		if err := q.DeadLetter(t.Context(), got[1], "test"); err != nil {
			t.Fatalf("DeadLetter() error = %v", err)
		}
		checkStats(t, q, build.QueueStats{Visible: 2, InFlight: 1, DeadLettered: 1, OldestAge: 15 * time.Second})
		deleteAll(t, q, got[:1])
		drain(t, q)
		checkStats(t, q, build.QueueStats{DeadLettered: 1})
	})

	t.Run("concurrent receivers get each message once", func(t *testing.T) {
		t.Parallel()
		clock := NewClock(time.Time{})
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
		for range 4 {
			wg.Go(func() {
				for {
					msgs, err := q.Receive(t.Context(), 3, 0)
					if err != nil {
						t.Errorf("Receive() error = %v", err)
						return
					}
					if len(msgs) == 0 {
						return
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
				clock := NewClock(time.Time{})
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
		q := newQueue(t, NewClock(time.Time{}))
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
		q := newQueue(t, NewClock(time.Time{}))
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
func receive(t *testing.T, q Queue, n int) []build.Message {
	t.Helper()
	msgs, err := q.Receive(t.Context(), n, 0)
	if err != nil {
		t.Fatalf("Receive() error = %v", err)
	}
	return msgs
}

func deleteAll(t *testing.T, q Queue, msgs []build.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := q.Delete(t.Context(), m.Receipt); err != nil {
			t.Fatalf("Delete(%s) error = %v", m.ID, err)
		}
	}
}

// drain receives and deletes until the queue returns nothing.
func drain(t *testing.T, q Queue) {
	t.Helper()
	for {
		msgs := receive(t, q, 10)
		if len(msgs) == 0 {
			return
		}
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
