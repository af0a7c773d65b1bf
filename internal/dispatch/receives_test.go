package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

// receiveLog is a queue whose receives take at least slow each, so that
// receives made at once overlap, and which keeps what they did: how many
// were in flight at most, how many of those long polls, and each
// receive's wait and start.
type receiveLog struct {
	*buildtest.FakeQueue
	slow time.Duration

	mu            sync.Mutex
	inFlight      int
	polls         int // long polls in flight
	maxInFlight   int
	maxPolls      int
	waits         []time.Duration
	started       []time.Time
	shortReceives int // receives that came back with fewer than asked
}

func (q *receiveLog) Receive(ctx context.Context, n int, wait time.Duration) ([]build.Message, error) {
	q.mu.Lock()
	q.inFlight++
	q.maxInFlight = max(q.maxInFlight, q.inFlight)
	if wait > 0 {
		q.polls++
		q.maxPolls = max(q.maxPolls, q.polls)
	}
	q.waits = append(q.waits, wait)
	q.started = append(q.started, time.Now())
	q.mu.Unlock()
	t := time.NewTimer(q.slow)
	msgs, err := q.FakeQueue.Receive(ctx, n, wait)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	q.mu.Lock()
	q.inFlight--
	if wait > 0 {
		q.polls--
	}
	if len(msgs) < n {
		q.shortReceives++
	}
	q.mu.Unlock()
	return msgs, err
}

// since returns the receives started at or after t, and how many of them
// were short polls.
func (q *receiveLog) since(t time.Time) (n, short int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, at := range q.started {
		if !at.Before(t) {
			n++
			if q.waits[i] == 0 {
				short++
			}
		}
	}
	return n, short
}

func (q *receiveLog) maxima() (inFlight, polls int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.maxInFlight, q.maxPolls
}

// runReceiving runs a dispatcher over q (batches of 10, 64 workers: four
// receives in flight at most) until the returned stop.
func runReceiving(t *testing.T, f *fixture, q *receiveLog, gate dispatch.Gate, cfg dispatch.Config) (stop func()) {
	t.Helper()
	cfg.Workers, cfg.BatchSize = 64, 10
	d := dispatch.New(cfg, dispatch.Deps{Queue: q, Catalog: f.catalog, Locks: f.locks,
		Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Gate: gate, Now: time.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestBusyQueueGetsSeveralReceivesInFlight: while receives come back full,
// more than one is in flight (each a round trip on SQS, a write transaction
// on SQLite), never more than Receives, and only one of them a long poll;
// once the queue is drained the extra ones stop and an idle dispatcher
// long-polls alone.
func TestBusyQueueGetsSeveralReceivesInFlight(t *testing.T) {
	t.Parallel()
	f := newFixture(0, nil)
	q := &receiveLog{FakeQueue: f.queue, slow: 20 * time.Millisecond}
	reqs := publish(context.Background(), t, f, "busy", 300)
	cfg := f.cfg
	cfg.WaitTime = 50 * time.Millisecond
	runReceiving(t, f, q, nil, cfg)
	waitFor(t, "every build", func() bool { return len(f.launcher.Launched()) == len(reqs) })

	inFlight, polls := q.maxima()
	if inFlight < 2 || inFlight > 4 {
		t.Errorf("at most %d receives in flight while the queue was busy, want 2 to 4 (Receives, by default 4)", inFlight)
	}
	if polls != 1 {
		t.Errorf("at most %d long polls in flight, want 1", polls)
	}

	// Drained: the extra loops' next receives come back short and they
	// stop; the first loop long-polls on its own.
	time.Sleep(200 * time.Millisecond)
	idle := time.Now()
	time.Sleep(500 * time.Millisecond)
	n, short := q.since(idle)
	if short != 0 || n > 12 {
		t.Errorf("idle for 500ms with 50ms long polls: %d receives, %d of them short polls; want at most ~10, none short", n, short)
	}
}

// TestIdleDispatcherReceivesOneAtATime: on a queue that never holds a full
// batch, no extra receive starts: one long poll at a time, as before.
func TestIdleDispatcherReceivesOneAtATime(t *testing.T) {
	t.Parallel()
	f := newFixture(0, nil)
	q := &receiveLog{FakeQueue: f.queue, slow: 5 * time.Millisecond}
	cfg := f.cfg
	cfg.WaitTime = 30 * time.Millisecond
	runReceiving(t, f, q, nil, cfg)
	for i := range 5 { // a few requests, fewer than a batch each time
		publish(context.Background(), t, f, fmt.Sprintf("trickle%d", i), 3)
		waitFor(t, "the trickle", func() bool { return len(f.launcher.Launched()) == 3*(i+1) })
		time.Sleep(40 * time.Millisecond)
	}
	if inFlight, _ := q.maxima(); inFlight != 1 {
		t.Errorf("at most %d receives in flight on a queue that never held a batch, want 1", inFlight)
	}
	if _, short := q.since(time.Time{}); short != 0 {
		t.Errorf("%d short polls on a queue that never held a batch, want none", short)
	}
}

// TestPauseStopsEveryReceive: once the first loop reads a paused gate, the
// extra ones receive nothing more (they never read the gate themselves)
// and what is left waits on the queue.
func TestPauseStopsEveryReceive(t *testing.T) {
	t.Parallel()
	f := newFixture(0, nil)
	// Slow receives and many requests: the drain lasts well past the pause.
	q := &receiveLog{FakeQueue: f.queue, slow: 30 * time.Millisecond}
	reqs := publish(context.Background(), t, f, "paused", 1000)
	gate := &testGate{FakeGate: buildtest.NewGate()}
	cfg := f.cfg
	cfg.WaitTime, cfg.GateInterval = 50*time.Millisecond, 50*time.Millisecond
	stop := runReceiving(t, f, q, gate, cfg)
	waitFor(t, "several receives in flight", func() bool { n, _ := q.maxima(); return n >= 2 })
	gate.set(t, true)
	// Within two gate intervals the first loop has read the pause; the
	// receives in flight then end within their 30ms.
	time.Sleep(4 * cfg.GateInterval)
	after := time.Now()
	time.Sleep(300 * time.Millisecond)
	if n, _ := q.since(after); n != 0 {
		t.Errorf("%d receives started more than two gate intervals after the pause, want none", n)
	}
	launched := len(f.launcher.Launched())
	if launched == len(reqs) {
		t.Fatalf("all %d requests launched before the pause took effect: the test proves nothing", launched)
	}
	stop()
	if st, err := f.queue.Stats(context.Background()); err != nil || st.Visible != len(reqs)-launched || st.InFlight != 0 {
		t.Errorf("queue after the pause = %+v, %v; want the %d not launched visible, none in flight", st, err, len(reqs)-launched)
	}
}
