package events_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// chanSubscriber hands out msgs on Subscribe to the one topic it serves:
// the test sees each message's Ack and Nack.
type chanSubscriber struct {
	topic string
	msgs  chan *message.Message
	err   error
}

func (s *chanSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.err != nil {
		return nil, s.err
	}
	if topic != s.topic {
		return nil, errors.New("no such topic " + topic)
	}
	return s.msgs, nil
}

func (s *chanSubscriber) Close() error { return nil }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func eventMessage(t *testing.T, r build.Record, version int) (build.Event, *message.Message) {
	t.Helper()
	e := build.NewEvent(r, version, base)
	e.Source = testSource
	m, err := events.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

func acked(m *message.Message) bool {
	select {
	case <-m.Acked():
		return true
	default:
		return false
	}
}

func nacked(m *message.Message) bool {
	select {
	case <-m.Nacked():
		return true
	default:
		return false
	}
}

// A failing handler is called again, with the same event, until it
// succeeds; only then is the message acknowledged, and only then does the
// next message come.
func TestConsumeRetriesUntilHandled(t *testing.T) {
	t.Parallel()
	sub := &chanSubscriber{topic: testTopic, msgs: make(chan *message.Message)}
	r := queued(0)
	first, m1 := eventMessage(t, r, 1)
	_, m2 := eventMessage(t, lifeOf(t, r)[1], 2)

	var mu sync.Mutex
	var calls []string
	var ackedEarly bool
	handled := make(chan struct{})
	handle := func(ctx context.Context, e build.Event) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, e.ID)
		if e.ID == first.ID && acked(m1) {
			ackedEarly = true
		}
		switch {
		case e.ID == first.ID && len(calls) < 3:
			return errors.New("the endpoint is down")
		case e.Version == 2:
			close(handled)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- events.Consume(ctx, sub, testTopic, handle, quiet) }()
	sub.msgs <- m1
	sub.msgs <- m2 // taken only once m1 is handled
	if !acked(m1) {
		t.Error("the next message was taken before the first was acknowledged")
	}
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the second event was not handled")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Consume() after cancel = %v, want an error wrapping context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{first.ID, first.ID, first.ID, build.EventID(r.BuildID, 2)}
	if len(calls) != len(want) {
		t.Fatalf("handler calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("handler calls %v, want %v", calls, want)
		}
	}
	if ackedEarly {
		t.Error("the message was acknowledged while its handler still failed")
	}
	if nacked(m1) || !acked(m2) {
		t.Errorf("m1 nacked %v, m2 acked %v: want both acknowledged once handled", nacked(m1), acked(m2))
	}
}

// A message that is no event is acknowledged and dropped; the handler
// never sees it and the events behind it come.
func TestConsumeDropsWhatIsNoEvent(t *testing.T) {
	t.Parallel()
	sub := &chanSubscriber{topic: testTopic, msgs: make(chan *message.Message, 3)}
	junk := message.NewMessage("junk", []byte(`{"specversion":"1.0","id":"x"}`))
	notJSON := message.NewMessage("not-json", []byte("hello"))
	e, m := eventMessage(t, queued(0), 1)
	sub.msgs <- junk
	sub.msgs <- notJSON
	sub.msgs <- m
	got := make(chan build.Event, 3)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(ctx, sub, testTopic, func(ctx context.Context, e build.Event) error {
			got <- e
			return nil
		}, quiet)
	}()
	select {
	case h := <-got:
		if h.ID != e.ID {
			t.Errorf("handler got %s, want %s", h.ID, e.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event behind the junk was not handled")
	}
	cancel()
	<-done
	if !acked(junk) || !acked(notJSON) {
		t.Errorf("junk acked %v, not-JSON acked %v: want both dropped with an ack", acked(junk), acked(notJSON))
	}
	if len(got) > 0 {
		t.Errorf("handler also got %v", <-got)
	}
}

// A context that ends while the handler fails leaves the message
// unacknowledged (Nack: it comes again) and returns ctx's error.
func TestConsumeCancelledWhileRetrying(t *testing.T) {
	t.Parallel()
	sub := &chanSubscriber{topic: testTopic, msgs: make(chan *message.Message, 1)}
	_, m := eventMessage(t, queued(0), 1)
	sub.msgs <- m
	ctx, cancel := context.WithCancel(t.Context())
	tried := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(ctx, sub, testTopic, func(ctx context.Context, e build.Event) error {
			tried <- struct{}{}
			return errors.New("the endpoint is down")
		}, quiet)
	}()
	<-tried
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Consume() = %v, want an error wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Consume() went on after its context ended")
	}
	if acked(m) || !nacked(m) {
		t.Errorf("message acked %v, nacked %v: want it nacked, to come again", acked(m), nacked(m))
	}
}

func TestConsumeSubscriptionEnds(t *testing.T) {
	t.Parallel()
	sub := &chanSubscriber{topic: testTopic, msgs: make(chan *message.Message)}
	close(sub.msgs)
	err := events.Consume(t.Context(), sub, testTopic, func(context.Context, build.Event) error { return nil }, quiet)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Consume() of an ended subscription = %v, want an error", err)
	}
	sub = &chanSubscriber{topic: testTopic, err: errors.New("no broker")}
	if err := events.Consume(t.Context(), sub, testTopic, func(context.Context, build.Event) error { return nil }, quiet); err == nil {
		t.Error("Consume() with a failing Subscribe returned nil")
	}
}
