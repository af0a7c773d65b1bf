package buildtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// The event ports the suites check.
type (
	EventOutbox = build.EventOutbox
	EventStream = build.EventStream
)

// write stores r, the record as a change left it, and writes the change's
// event to the outbox: the record's next version. Callers hold s.mu.
func (s *FakeRecords) write(r build.Record) {
	s.records[r.BuildID] = r
	s.versions[r.BuildID]++
	s.outbox = append(s.outbox, build.NewEvent(r, s.versions[r.BuildID], time.Now()))
	close(s.written)
	s.written = make(chan struct{})
}

// Outbox returns the store's event outbox.
func (s *FakeRecords) Outbox() build.EventOutbox { return fakeOutbox{s} }

// fakeOutbox is FakeRecords's EventOutbox: the events in write order,
// which is each build's version order.
type fakeOutbox struct{ s *FakeRecords }

// Pending returns up to max events, oldest first; see build.EventOutbox.
func (o fakeOutbox) Pending(ctx context.Context, max int, wait time.Duration) ([]build.Event, error) {
	if max <= 0 {
		max = 1
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		o.s.mu.Lock()
		out := append([]build.Event(nil), o.s.outbox[:min(max, len(o.s.outbox))]...)
		written := o.s.written
		o.s.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read the outbox: %w", ctx.Err())
		case <-timer.C:
			return nil, nil
		case <-written:
		}
	}
}

// Forwarded removes the events from the outbox.
func (o fakeOutbox) Forwarded(ctx context.Context, evs ...build.Event) error {
	gone := map[string]bool{}
	for _, e := range evs {
		gone[e.ID] = true
	}
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	kept := o.s.outbox[:0]
	for _, e := range o.s.outbox {
		if !gone[e.ID] {
			kept = append(kept, e)
		}
	}
	clear(o.s.outbox[len(kept):])
	o.s.outbox = kept
	return nil
}

// FakeStream is an in-memory event stream: a watermill Publisher that the
// forwarder publishes to, and the build.EventStream Decap's consumers read.
// It keeps every event published (a second publish of an event ID is
// dropped), each consumer group's position, and live tails. It is safe for
// concurrent use.
type FakeStream struct {
	mu      sync.Mutex
	log     []build.Event
	ids     map[string]bool
	offsets map[string]int           // group → index of its next event
	busy    map[string]chan struct{} // group → held by the consumer running it
	tails   map[chan build.Event]bool
	changed chan struct{}
	closed  bool
}

// TailBuffer is how many events a tail's reader may fall behind.
const TailBuffer = 256

// NewStream returns an empty FakeStream.
func NewStream() *FakeStream {
	return &FakeStream{ids: map[string]bool{}, offsets: map[string]int{}, busy: map[string]chan struct{}{},
		tails: map[chan build.Event]bool{}, changed: make(chan struct{})}
}

// Publish appends the messages' events, in order, whatever the topic. A
// message that is no event gives ErrInvalid (the messages before it are
// published).
func (s *FakeStream) Publish(topic string, msgs ...*message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("publish to %s: stream closed", topic)
	}
	for _, m := range msgs {
		e, err := events.EventOf(m)
		if err != nil {
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		if s.ids[e.ID] {
			continue
		}
		s.ids[e.ID] = true
		s.log = append(s.log, e)
		for c := range s.tails {
			select {
			case c <- e:
			default: // fell behind: closed, as the port says
				delete(s.tails, c)
				close(c)
			}
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// Close ends publishing.
func (s *FakeStream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Published returns every event published, in order.
func (s *FakeStream) Published() []build.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]build.Event(nil), s.log...)
}

// Consume delivers group's events to handle; see build.EventStream. One
// consumer of a group runs at a time; others wait for it.
func (s *FakeStream) Consume(ctx context.Context, group string, handle build.EventHandler) error {
	if err := build.ValidateConsumerGroup(group); err != nil {
		return err
	}
	s.mu.Lock()
	if _, ok := s.offsets[group]; !ok {
		s.offsets[group] = len(s.log)
		s.busy[group] = make(chan struct{}, 1)
	}
	sem := s.busy[group]
	s.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("consume %s: %w", group, ctx.Err())
	}
	defer func() { <-sem }()
	wait := events.MinRetry
	for {
		s.mu.Lock()
		i, changed := s.offsets[group], s.changed
		var e build.Event
		have := i < len(s.log)
		if have {
			e = s.log[i]
		}
		s.mu.Unlock()
		if !have {
			select {
			case <-ctx.Done():
				return fmt.Errorf("consume %s: %w", group, ctx.Err())
			case <-changed:
				continue
			}
		}
		if err := handle(ctx, e); err != nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("consume %s: %w", group, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, events.MaxRetry)
			continue
		}
		wait = events.MinRetry
		s.mu.Lock()
		s.offsets[group] = i + 1
		s.mu.Unlock()
	}
}

// Tail returns the events published from now on; see build.EventStream.
func (s *FakeStream) Tail(ctx context.Context) (<-chan build.Event, error) {
	c := make(chan build.Event, TailBuffer)
	s.mu.Lock()
	s.tails[c] = true
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.tails[c] {
			delete(s.tails, c)
			close(c)
		}
	}()
	return c, nil
}
