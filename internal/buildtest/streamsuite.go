package buildtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// TestEventStream runs the contract of a build-event stream: the watermill
// Publisher the forwarder publishes to and the build.EventStream Decap's
// consumers read. open must return a new, empty stream's two sides.
// Subtests run in parallel.
//
// A new consumer group may start at the end of the stream or earlier, so
// the suite first publishes sentinel events (of a build of their own)
// until a new consumer sees one, and then checks only the events it
// publishes after.
func TestEventStream(t *testing.T, open func(t *testing.T) (message.Publisher, build.EventStream)) {
	for name, test := range map[string]func(*testing.T, func(*testing.T) (message.Publisher, build.EventStream)){
		"order and dedup":       TestEventStreamOrder,
		"handler error":         TestEventStreamRetry,
		"durable position":      TestEventStreamDurable,
		"groups":                TestEventStreamGroups,
		"one group, two takers": TestEventStreamSharedGroup,
		"tail":                  TestEventStreamTail,
		"tail falls behind":     TestEventStreamTailBehind,
		"bad input":             TestEventStreamBadInput,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, open)
		})
	}
}

// streamTimeout bounds how long the suite waits for an event to arrive.
const streamTimeout = 15 * time.Second

// streamTakeover bounds how long a group's consumer waits for the events
// another consumer of the group left when it stopped: the longest
// visibility timeout of the streams (awsevents: 30 s) and streamTimeout.
const streamTakeover = 30*time.Second + streamTimeout

// streamBuild makes a build's events for the stream suite.
type streamBuild struct {
	r build.Record
}

func newStreamBuild(i int) *streamBuild {
	return &streamBuild{r: newRecord(time.Now().Add(time.Duration(i)*time.Millisecond), "ae6rt", "stream", build.StatusQueued)}
}

// event returns the build's version-th event (its record deferred
// version-1 times, so each is another record).
func (b *streamBuild) event(version int) build.Event {
	r := b.r
	if version > 1 {
		r.Status, r.Reason = build.StatusDeferred, fmt.Sprintf("deferral %d", version-1)
	}
	e := build.NewEvent(r, version, time.Now())
	e.Source = "https://decap.test"
	return e
}

func (b *streamBuild) events(versions ...int) []build.Event {
	out := make([]build.Event, len(versions))
	for i, v := range versions {
		out[i] = b.event(v)
	}
	return out
}

func publishEvents(t *testing.T, pub message.Publisher, evs ...build.Event) {
	t.Helper()
	msgs := make([]*message.Message, len(evs))
	for i, e := range evs {
		m, err := events.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	if err := pub.Publish("build-events", msgs...); err != nil {
		t.Fatalf("Publish(%d events) error = %v", len(evs), err)
	}
}

// streamConsumer runs Consume for a group and keeps what its handler got.
type streamConsumer struct {
	mu      sync.Mutex
	got     []build.Event // every call of the handler, failed or not
	acked   []build.Event // the calls that returned nil
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan error
}

// sentinelProject is the project of the sentinel events (synced), which
// the consumers' lists leave out.
const sentinelProject = "sentinel"

// consume starts a consumer of group whose handler calls handle (nil:
// accept every event) and records each call.
func consume(t *testing.T, s build.EventStream, group string, handle build.EventHandler) *streamConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	c := &streamConsumer{changed: make(chan struct{}), cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- s.Consume(ctx, group, func(ctx context.Context, e build.Event) error {
			var err error
			if handle != nil {
				err = handle(ctx, e)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.got = append(c.got, e)
			if err == nil {
				c.acked = append(c.acked, e)
			}
			close(c.changed)
			c.changed = make(chan struct{})
			return err
		})
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop ends the consumer and returns Consume's error.
func (c *streamConsumer) stop() error {
	c.cancel()
	select {
	case err, ok := <-c.done:
		if ok {
			close(c.done)
		}
		return err
	case <-time.After(streamTimeout):
		return errors.New("Consume did not return after its context was cancelled")
	}
}

// synced publishes sentinel events until c sees one: from then on, c gets
// every event published.
func (c *streamConsumer) synced(t *testing.T, pub message.Publisher) {
	t.Helper()
	sentinel := newStreamBuild(-1)
	sentinel.r.Project = sentinelProject
	deadline := time.Now().Add(streamTimeout)
	for v := 1; ; v++ {
		publishEvents(t, pub, sentinel.event(v))
		if c.wait(50*time.Millisecond, func(got []build.Event) bool {
			return slices.ContainsFunc(got, func(e build.Event) bool { return e.Subject == sentinel.r.BuildID })
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer got no sentinel event in %v", streamTimeout)
		}
	}
}

// wait waits up to d until done holds for the acknowledged events.
func (c *streamConsumer) wait(d time.Duration, done func(acked []build.Event) bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		ok, changed := done(c.acked), c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}

// waitFor waits until the consumer acknowledged every event of ids.
func (c *streamConsumer) waitFor(t *testing.T, evs ...build.Event) {
	t.Helper()
	c.waitWithin(t, streamTimeout, evs...)
}

// waitWithin is waitFor with a wait of its own.
func (c *streamConsumer) waitWithin(t *testing.T, timeout time.Duration, evs ...build.Event) {
	t.Helper()
	if !c.wait(timeout, func(acked []build.Event) bool {
		for _, e := range evs {
			if !slices.ContainsFunc(acked, func(a build.Event) bool { return a.ID == e.ID }) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the consumer did not get %v in %v; it got %v", eventIDs(evs), timeout, eventIDs(c.ackedNow()))
	}
}

// ackedNow returns the events acknowledged, the sentinels left out.
func (c *streamConsumer) ackedNow() []build.Event { return c.filter(true) }

// calledNow returns every handler call, the sentinels left out.
func (c *streamConsumer) calledNow() []build.Event { return c.filter(false) }

func (c *streamConsumer) filter(acked bool) []build.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	from := c.got
	if acked {
		from = c.acked
	}
	var out []build.Event
	for _, e := range from {
		if e.Record.Project != sentinelProject {
			out = append(out, e)
		}
	}
	return out
}

// TestEventStreamOrder: a consumer gets each build's events in the order
// published, each once, a second publish of an event dropped.
func TestEventStreamOrder(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	c := consume(t, s, "order", nil)
	c.synced(t, pub)
	a, b := newStreamBuild(0), newStreamBuild(1)
	publishEvents(t, pub, a.event(1), b.event(1), a.event(2))
	publishEvents(t, pub, a.event(2)) // a forwarder that crashed before Forwarded
	publishEvents(t, pub, b.event(2), a.event(1), a.event(3))
	c.waitFor(t, a.event(3), b.event(2))
	want := eventIDs([]build.Event{a.event(1), b.event(1), a.event(2), b.event(2), a.event(3)})
	if got := eventIDs(c.ackedNow()); !slices.Equal(got, want) {
		t.Errorf("the consumer got %v, want %v (publish order, each once)", got, want)
	}
	for _, e := range c.ackedNow() {
		if e.Source != "https://decap.test" || e.Record.BuildID != e.Subject || e.Type == "" {
			t.Errorf("event %s came back as %+v", e.ID, e)
		}
	}
}

// TestEventStreamRetry: an event whose handler fails comes again until the
// handler succeeds; the events behind it wait.
func TestEventStreamRetry(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	a := newStreamBuild(0)
	var mu sync.Mutex
	fails := 2
	c := consume(t, s, "retry", func(ctx context.Context, e build.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if e.ID == a.event(1).ID && fails > 0 {
			fails--
			return errors.New("the endpoint is down")
		}
		return nil
	})
	c.synced(t, pub)
	publishEvents(t, pub, a.events(1, 2)...)
	c.waitFor(t, a.event(2))
	want := eventIDs(a.events(1, 1, 1, 2))
	if got := eventIDs(c.calledNow()); !slices.Equal(got, want) {
		t.Errorf("handler calls %v, want %v (the failing event again, the next after it)", got, want)
	}
	if got := eventIDs(c.ackedNow()); !slices.Equal(got, eventIDs(a.events(1, 2))) {
		t.Errorf("acknowledged %v, want %v", got, eventIDs(a.events(1, 2)))
	}
}

// TestEventStreamDurable: a group's position survives its consumer; the
// event a consumer was handling when it stopped comes again, the ones it
// acknowledged do not, and those published meanwhile come.
func TestEventStreamDurable(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	a := newStreamBuild(0)
	handling := make(chan struct{})
	first := consume(t, s, "durable", func(ctx context.Context, e build.Event) error {
		if e.ID == a.event(2).ID {
			close(handling)
			<-ctx.Done() // stopped while handling it
			return ctx.Err()
		}
		return nil
	})
	first.synced(t, pub)
	publishEvents(t, pub, a.events(1, 2)...)
	select {
	case <-handling:
	case <-time.After(streamTimeout):
		t.Fatalf("the consumer did not get %s; it got %v", a.event(2).ID, eventIDs(first.ackedNow()))
	}
	if err := first.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Consume() after its context was cancelled = %v, want an error wrapping context.Canceled", err)
	}
	publishEvents(t, pub, a.events(3, 4)...)

	second := consume(t, s, "durable", nil)
	second.waitFor(t, a.event(4))
	if got, want := eventIDs(second.ackedNow()), eventIDs(a.events(2, 3, 4)); !slices.Equal(got, want) {
		t.Errorf("the group's next consumer got %v, want %v", got, want)
	}
}

// TestEventStreamGroups: each group gets every event.
func TestEventStreamGroups(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	c1, c2 := consume(t, s, "webhooks", nil), consume(t, s, "commit-statuses", nil)
	c1.synced(t, pub)
	c2.synced(t, pub)
	a := newStreamBuild(0)
	publishEvents(t, pub, a.events(1, 2, 3)...)
	for _, c := range []*streamConsumer{c1, c2} {
		c.waitFor(t, a.event(3))
		if got, want := eventIDs(c.ackedNow()), eventIDs(a.events(1, 2, 3)); !slices.Equal(got, want) {
			t.Errorf("a group got %v, want %v", got, want)
		}
	}
}

// TestEventStreamSharedGroup: two consumers of one group share its events
// (each event handled, each consumer's in order), and when one stops the
// other goes on.
func TestEventStreamSharedGroup(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	c1 := consume(t, s, "shared", nil)
	c1.synced(t, pub)
	c2 := consume(t, s, "shared", nil)
	a := newStreamBuild(0)
	var vs []int
	for v := 1; v <= 10; v++ {
		vs = append(vs, v)
	}
	publishEvents(t, pub, a.events(vs...)...)
	union := func() map[string]bool {
		seen := map[string]bool{}
		for _, c := range []*streamConsumer{c1, c2} {
			for _, e := range c.ackedNow() {
				seen[e.ID] = true
			}
		}
		return seen
	}
	waitUnion := func(evs []build.Event) {
		t.Helper()
		deadline := time.Now().Add(streamTimeout)
		for {
			seen := union()
			if !slices.ContainsFunc(evs, func(e build.Event) bool { return !seen[e.ID] }) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the group's consumers got %v of %v", seen, eventIDs(evs))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUnion(a.events(vs...))
	// Stop whichever holds the group; the other takes over.
	if err := c1.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Consume() after cancel = %v", err)
	}
	more := a.events(11, 12)
	publishEvents(t, pub, more...)
	// A consumer stopped during a long poll may have been handed the next
	// event anyway (the queue does not know the poll was abandoned): the
	// group's next event then waits out its visibility timeout (30 s on
	// SQS) before the other consumer gets it. At least once, never lost.
	c2.waitWithin(t, streamTakeover, more...)
	for i, c := range []*streamConsumer{c1, c2} {
		last := 0
		for _, e := range c.ackedNow() {
			if e.Version < last {
				t.Errorf("consumer %d got version %d after %d", i+1, e.Version, last)
			}
			last = e.Version
		}
	}
}

// TestEventStreamTail: a tail gets the events published after it began, in
// order, and its channel closes when its context ends.
func TestEventStreamTail(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	a := newStreamBuild(0)
	publishEvents(t, pub, a.event(1))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	tail, err := s.Tail(ctx)
	if err != nil {
		t.Fatalf("Tail() error = %v", err)
	}
	publishEvents(t, pub, a.events(2, 3)...)
	var got []build.Event
	for len(got) < 2 {
		select {
		case e, ok := <-tail:
			if !ok {
				t.Fatalf("the tail closed after %v", eventIDs(got))
			}
			got = append(got, e)
		case <-time.After(streamTimeout):
			t.Fatalf("the tail got %v in %v, want 2 events", eventIDs(got), streamTimeout)
		}
	}
	if want := eventIDs(a.events(2, 3)); !slices.Equal(eventIDs(got), want) {
		t.Errorf("the tail got %v, want %v (only what was published after it began)", eventIDs(got), want)
	}
	cancel()
	deadline := time.After(streamTimeout)
	for {
		select {
		case _, ok := <-tail:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the tail's channel stayed open after its context ended")
		}
	}
}

// TestEventStreamTailBehind: a tail whose reader falls TailBuffer events
// behind is closed, not left to skip events silently.
func TestEventStreamTailBehind(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	tail, err := s.Tail(t.Context())
	if err != nil {
		t.Fatalf("Tail() error = %v", err)
	}
	a := newStreamBuild(0)
	var vs []int
	for v := 1; v <= 2*TailBuffer+10; v++ {
		vs = append(vs, v)
	}
	publishEvents(t, pub, a.events(vs...)...)
	// The reader reads nothing until the tail's buffer is full.
	deadline := time.Now().Add(streamTimeout)
	for len(tail) < cap(tail) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for {
		select {
		case e, ok := <-tail:
			if !ok {
				if n >= len(vs) {
					t.Errorf("the tail gave all %d events, want it closed behind", n)
				}
				return
			}
			if e.Version != n+1 {
				t.Fatalf("the tail gave version %d after %d", e.Version, n)
			}
			n++
		case <-time.After(streamTimeout):
			t.Fatalf("a tail %d events behind stayed open after %d events", len(vs), n)
		}
	}
}

// TestEventStreamBadInput: a message that is no event is refused with
// ErrInvalid; so is a bad consumer group name.
func TestEventStreamBadInput(t *testing.T, open func(*testing.T) (message.Publisher, build.EventStream)) {
	pub, s := open(t)
	junk := message.NewMessage("junk", []byte(`{"specversion":"1.0","id":"x"}`))
	if err := pub.Publish("build-events", junk); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Publish() of a message that is no event error = %v, want ErrInvalid", err)
	}
	for _, g := range []string{"", "Webhooks", "-x", "a b", "a/b", strings.Repeat("a", 65)} {
		if err := s.Consume(t.Context(), g, func(context.Context, build.Event) error { return nil }); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Consume(group %q) error = %v, want ErrInvalid", g, err)
		}
	}
}
