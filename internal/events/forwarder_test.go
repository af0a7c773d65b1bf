package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
)

const (
	testTopic  = "build-events"
	testSource = "https://decap.test"
)

var base = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// lifeOf returns the records of the changes of a build's life from
// queued r: queued, deferred, running, succeeded.
func lifeOf(t *testing.T, r build.Record) []build.Record {
	t.Helper()
	out := []build.Record{r}
	for _, change := range []func(*build.Record) error{
		func(r *build.Record) error { return r.Defer(base, base.Add(time.Minute), "busy") },
		func(r *build.Record) error { return r.Start(base.Add(time.Second), "pod", "c0ffee") },
		func(r *build.Record) error {
			return r.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(time.Minute))
		},
	} {
		if err := change(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// life saves the first steps changes of the life of build r to s.
func life(t *testing.T, s *buildtest.FakeRecords, r build.Record, steps int) {
	t.Helper()
	for _, c := range lifeOf(t, r)[:steps] {
		if err := s.Save(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
}

func queued(i int) build.Record {
	at := base.Add(time.Duration(i) * time.Second)
	return build.Record{BuildID: build.NewID(at), Team: "acme", Project: "widget", Ref: fmt.Sprintf("b%d", i),
		RefType: build.Branch, Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: at}
}

// interleaved writes the lives of n builds, one change of each in turn
// (a:1, b:1, a:2, b:2, …), and returns the builds.
func interleaved(t *testing.T, s *buildtest.FakeRecords, n int) []build.Record {
	t.Helper()
	rs, lives := make([]build.Record, n), make([][]build.Record, n)
	for i := range rs {
		rs[i] = queued(i)
		lives[i] = lifeOf(t, rs[i])
	}
	for step := range 4 {
		for i := range rs {
			if err := s.Save(t.Context(), lives[i][step]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return rs
}

func newForwarder(t *testing.T, o build.EventOutbox, pub message.Publisher, cfg events.ForwarderConfig) *events.Forwarder {
	t.Helper()
	cfg.Topic, cfg.Source = testTopic, testSource
	f, err := events.NewForwarder(o, pub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// versions returns, per build, the versions of evs in their order.
func versions(evs []build.Event) map[build.ID][]int {
	out := map[build.ID][]int{}
	for _, e := range evs {
		out[e.Subject] = append(out[e.Subject], e.Version)
	}
	return out
}

func pending(t *testing.T, o build.EventOutbox) []build.Event {
	t.Helper()
	evs, err := o.Pending(t.Context(), 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestForwardInOrderPerBuild(t *testing.T) {
	t.Parallel()
	s, stream := buildtest.NewRecords(), buildtest.NewStream()
	rs := interleaved(t, s, 3)
	f := newForwarder(t, s.Outbox(), stream, events.ForwarderConfig{Batch: 5})
	total := 0
	for range 10 {
		n, err := f.Forward(t.Context(), 0)
		if err != nil {
			t.Fatalf("Forward() error = %v", err)
		}
		total += n
		if n == 0 {
			break
		}
	}
	if total != 12 {
		t.Errorf("forwarded %d events, want 12", total)
	}
	got := stream.Published()
	for _, r := range rs {
		if v := versions(got)[r.BuildID]; !slices.Equal(v, []int{1, 2, 3, 4}) {
			t.Errorf("build %s published as versions %v, want [1 2 3 4]", r.BuildID, v)
		}
	}
	for _, e := range got {
		if e.Source != testSource {
			t.Errorf("event %s published with source %q, want %q", e.ID, e.Source, testSource)
		}
	}
	if left := pending(t, s.Outbox()); len(left) > 0 {
		t.Errorf("outbox after forwarding holds %v", left)
	}
}

// failingPublisher fails the publish of the events in fail (by ID) as
// many times as their count says, and passes everything else to next. It
// records, at each publish, whether the event was still in the outbox.
type failingPublisher struct {
	next   message.Publisher
	outbox build.EventOutbox
	mu     sync.Mutex
	fail   map[string]int
	tries  []string
	gone   []string // events that had left the outbox when published
}

func (p *failingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		e, err := events.EventOf(m)
		if err != nil {
			return err
		}
		evs, err := p.outbox.Pending(m.Context(), 1000, 0)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.tries = append(p.tries, e.ID)
		if !slices.ContainsFunc(evs, func(o build.Event) bool { return o.ID == e.ID }) {
			p.gone = append(p.gone, e.ID)
		}
		failing := p.fail[e.ID] > 0
		if failing {
			p.fail[e.ID]--
		}
		p.mu.Unlock()
		if failing {
			return fmt.Errorf("publish %s: the topic is down", e.ID)
		}
		if err := p.next.Publish(topic, m); err != nil {
			return err
		}
	}
	return nil
}

func (p *failingPublisher) Close() error { return nil }

// A publish that fails mid-batch stops the round: the event and every
// later one stay in the outbox, nothing after it goes out, and the next
// round publishes them in order. An event is never removed from the
// outbox before its publish.
func TestForwardStopsAtFailedPublish(t *testing.T) {
	t.Parallel()
	s, stream := buildtest.NewRecords(), buildtest.NewStream()
	rs := interleaved(t, s, 2)
	a, b := rs[0].BuildID, rs[1].BuildID
	failed := build.EventID(a, 2) // the third event written (a:1, b:1, a:2, …)
	pub := &failingPublisher{next: stream, outbox: s.Outbox(), fail: map[string]int{failed: 1}}
	obs := &observer{}
	f := newForwarder(t, s.Outbox(), pub, events.ForwarderConfig{Observer: obs})

	n, err := f.Forward(t.Context(), 0)
	if err == nil || n != 2 {
		t.Fatalf("Forward() with a failing publish = %d, %v, want 2 and an error", n, err)
	}
	if got, want := eventIDs(stream.Published()), []string{build.EventID(a, 1), build.EventID(b, 1)}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v (nothing from the failed event on)", got, want)
	}
	if got, want := pub.tries[len(pub.tries)-1], failed; got != want {
		t.Errorf("last publish tried %s, want the round to stop at the failed %s", got, want)
	}
	left := pending(t, s.Outbox())
	if len(left) != 6 || left[0].ID != failed {
		t.Errorf("outbox after the failed round holds %v, want 6 events from %s", eventIDs(left), failed)
	}

	if n, err := f.Forward(t.Context(), 0); err != nil || n != 6 {
		t.Fatalf("Forward() after the topic is back = %d, %v, want 6, nil", n, err)
	}
	got := versions(stream.Published())
	for _, id := range []build.ID{a, b} {
		if !slices.Equal(got[id], []int{1, 2, 3, 4}) {
			t.Errorf("build %s published as versions %v, want [1 2 3 4]", id, got[id])
		}
	}
	if len(pub.gone) > 0 {
		t.Errorf("events %v had left the outbox before they were published", pub.gone)
	}
	if left := pending(t, s.Outbox()); len(left) > 0 {
		t.Errorf("outbox after forwarding holds %v", eventIDs(left))
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.failed != 1 || obs.published != 8 || obs.forwarded != 8 {
		t.Errorf("observed %d failed and %d good publishes, %d forwarded, want 1, 8, 8", obs.failed, obs.published, obs.forwarded)
	}
}

// flakyOutbox's Forwarded fails while fail is set: a forwarder that
// published and could not remove what it published (a crash between the
// two).
type flakyOutbox struct {
	build.EventOutbox
	fail bool
}

func (o *flakyOutbox) Forwarded(ctx context.Context, evs ...build.Event) error {
	if o.fail {
		return errors.New("the store is down")
	}
	return o.EventOutbox.Forwarded(ctx, evs...)
}

// Events whose removal failed are published again: at least once, and the
// stream keeps one of each (by ID).
func TestForwardAgainAfterLostRemoval(t *testing.T) {
	t.Parallel()
	s, stream := buildtest.NewRecords(), buildtest.NewStream()
	life(t, s, queued(0), 3)
	o := &flakyOutbox{EventOutbox: s.Outbox(), fail: true}
	pub := &failingPublisher{next: stream, outbox: s.Outbox()}
	f := newForwarder(t, o, pub, events.ForwarderConfig{})
	if _, err := f.Forward(t.Context(), 0); err == nil {
		t.Fatal("Forward() with a failing removal returned no error")
	}
	if left := pending(t, s.Outbox()); len(left) != 3 {
		t.Fatalf("outbox holds %v after a failed removal, want the 3 events still", eventIDs(left))
	}
	o.fail = false
	if n, err := f.Forward(t.Context(), 0); err != nil || n != 3 {
		t.Fatalf("Forward() = %d, %v, want 3, nil", n, err)
	}
	if len(pub.tries) != 6 {
		t.Errorf("published %v, want every event twice", pub.tries)
	}
	if got := stream.Published(); len(got) != 3 {
		t.Errorf("the stream holds %v, want each event once", eventIDs(got))
	}
	if left := pending(t, s.Outbox()); len(left) > 0 {
		t.Errorf("outbox after forwarding holds %v", eventIDs(left))
	}
}

type observer struct {
	mu                           sync.Mutex
	published, failed, forwarded int
	lags                         []time.Duration
}

func (o *observer) EventPublished(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.failed++
	} else {
		o.published++
	}
}

func (o *observer) EventsForwarded(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.forwarded += n
}

func (o *observer) OutboxLag(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lags = append(o.lags, d)
}

// The lag a round observes is the age of the oldest pending event, and 0
// when the outbox is empty.
func TestForwardObservesOutboxLag(t *testing.T) {
	t.Parallel()
	s, stream := buildtest.NewRecords(), buildtest.NewStream()
	life(t, s, queued(0), 1)
	time.Sleep(10 * time.Millisecond)
	life(t, s, queued(1), 1)
	evs := pending(t, s.Outbox())
	oldest := evs[0].Time
	obs := &observer{}
	f := newForwarder(t, s.Outbox(), stream, events.ForwarderConfig{Observer: obs,
		Now: func() time.Time { return oldest.Add(7 * time.Second) }})
	if _, err := f.Forward(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Forward(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{7 * time.Second, 0}; !slices.Equal(obs.lags, want) {
		t.Errorf("observed lags %v, want %v", obs.lags, want)
	}
}

// Run forwards what is written while it runs, retries a failing topic, and
// returns nil when its context ends.
func TestForwarderRun(t *testing.T) {
	t.Parallel()
	s, stream := buildtest.NewRecords(), buildtest.NewStream()
	r := queued(0)
	pub := &failingPublisher{next: stream, outbox: s.Outbox(), fail: map[string]int{build.EventID(r.BuildID, 1): 2}}
	f := newForwarder(t, s.Outbox(), pub, events.ForwarderConfig{Sweep: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	life(t, s, r, 4)
	deadline := time.Now().Add(10 * time.Second)
	for len(stream.Published()) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() after cancel = %v, want nil", err)
	}
	if got := versions(stream.Published())[r.BuildID]; !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Errorf("Run published versions %v, want [1 2 3 4]", got)
	}
}

func TestNewForwarderNeedsTopicAndSource(t *testing.T) {
	t.Parallel()
	s := buildtest.NewRecords()
	for _, cfg := range []events.ForwarderConfig{{Source: testSource}, {Topic: testTopic}} {
		if _, err := events.NewForwarder(s.Outbox(), buildtest.NewStream(), cfg); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("NewForwarder(%+v) error = %v, want ErrInvalid", cfg, err)
		}
	}
}

func eventIDs(evs []build.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
