package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Run consumes the queue until ctx is done, with up to Workers decisions in
// flight. Messages of one group (lock key) are decided one after another in
// queue order; groups proceed independently, so a deferred key never holds
// up another. Run returns nil when ctx is cancelled after in-flight decisions
// finish.
//
// One receive loop long-polls the queue. While the queue keeps a batch
// waiting (a receive came back with all it asked for), up to Receives-1
// more loops receive beside it, each without waiting (a short poll), and
// each stops at its first receive that comes back short, so an idle
// dispatcher makes one receive per long poll, as before, and a busy one is
// not held up by one receive at a time (each a round trip on SQS, a write
// transaction on SQLite).
//
// Before each receive Run consults the dispatch gate (Deps.Gate), read at
// most once per GateInterval. While the gate is paused Run receives
// nothing and reads the gate again every GateInterval; requests wait on the
// queue. Messages that came after a receive waited for them (a long poll)
// are decided only if a fresh read finds the gate open; those received
// while a pause was set go back to the queue undecided.
// A failed read keeps the state Run saw last (open before the first read).
// Only the first loop reads the gate; the others receive while the state
// it read last is open and no older than GateInterval, and stop otherwise.
func (d *Dispatcher) Run(ctx context.Context) error {
	r := &receiving{
		d: d,
		// One token per message being decided.
		sem:  make(chan struct{}, d.cfg.Workers),
		gate: &gateWatch{gate: d.gate, every: d.cfg.GateInterval, log: d.log, obs: d.obs},
	}
	defer r.decisions.Wait()
	defer r.loops.Wait()
	r.loop(ctx, false)
	return nil
}

// receiving is one Run's receive loops and the decisions they started.
type receiving struct {
	d         *Dispatcher
	sem       chan struct{}
	gate      *gateWatch
	loops     sync.WaitGroup // the extra receive loops
	decisions sync.WaitGroup
	mu        sync.Mutex
	extra     int // extra receive loops running
}

// loop receives until ctx is done; an extra loop (see Run) also ends at a
// receive that comes back short, a failed one, or a gate it cannot trust.
func (r *receiving) loop(ctx context.Context, extra bool) {
	d := r.d
	if extra {
		defer func() {
			r.mu.Lock()
			r.extra--
			r.mu.Unlock()
		}()
	}
	backoff := time.Duration(0)
	for {
		// Block until a worker is free, then take what else is free, up to
		// a batch, without blocking.
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	take:
		for n < d.cfg.BatchSize {
			select {
			case r.sem <- struct{}{}:
				n++
			default:
				break take
			}
		}
		// Consulted after the wait for workers, which may be long, so
		// that what it says is fresh.
		if extra && !r.gate.openFresh() {
			r.release(n)
			return
		}
		if !extra && !r.gate.waitOpen(ctx) {
			r.release(n)
			return
		}
		wait := d.cfg.WaitTime
		if extra {
			wait = 0
		}
		received := time.Now()
		msgs, err := d.queue.Receive(ctx, n, wait)
		r.release(n - len(msgs))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if extra {
				d.log.Warn("receive from queue; the first receive loop goes on", "err", err)
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
			d.log.Error("receive from queue", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		// A long poll may outlast a pause: read the gate afresh after a
		// receive that waited, and hand what came back to the queue,
		// untouched, so a pause takes effect at once rather than after
		// the poll. An extra loop hands back what it received once the
		// first loop has seen a pause.
		paused := false
		if len(msgs) > 0 {
			if extra {
				paused = r.gate.knownPaused()
			} else {
				paused = r.gate.pausedAfter(ctx, time.Since(received))
			}
		}
		if paused {
			for _, m := range msgs {
				if err := d.queue.ChangeVisibility(context.WithoutCancel(ctx), m.Receipt, 0); err != nil && !errors.Is(err, build.ErrNotFound) {
					d.log.Warn("return message to the paused queue", "message_id", m.ID, "group_id", m.GroupID, "err", err)
				}
				<-r.sem
			}
			if extra {
				return
			}
			continue
		}
		for _, group := range groupInOrder(msgs) {
			r.decisions.Add(1)
			go func() {
				defer r.decisions.Done()
				// A decision in progress finishes even when ctx ends, so
				// shutdown never leaves a lock taken and nothing launched.
				d.handleGroup(context.WithoutCancel(ctx), group)
				for range group {
					<-r.sem
				}
			}()
		}
		switch {
		case len(msgs) < n:
			if extra {
				return // the queue has no batch waiting: the first loop goes on alone
			}
		case n == d.cfg.BatchSize:
			r.more(ctx)
		}
	}
}

// release gives back k workers' tokens.
func (r *receiving) release(k int) {
	for range k {
		<-r.sem
	}
}

// more starts an extra receive loop after a full batch, unless Receives
// loops run already.
func (r *receiving) more(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.extra+1 >= r.d.cfg.Receives {
		return
	}
	r.extra++
	r.loops.Go(func() { r.loop(ctx, true) })
}

// groupInOrder splits a batch by message group, keeping the order of groups'
// first appearance and the order within each group.
func groupInOrder(msgs []build.Message) [][]build.Message {
	index := map[string]int{}
	var groups [][]build.Message
	for _, m := range msgs {
		i, ok := index[m.GroupID]
		if !ok {
			i = len(groups)
			index[m.GroupID] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], m)
	}
	return groups
}

// handleGroup decides a group's messages in order. Once one is deferred, the
// rest are made visible again at once: the queue hands them out only after
// the deferred one, so order holds. While earlier messages are decided, the
// later ones are kept invisible too, so no other replica decides them
// meanwhile (SQS FIFO batches several messages of one group).
func (d *Dispatcher) handleGroup(ctx context.Context, msgs []build.Message) {
	var mu sync.Mutex
	waiting := msgs[1:] // received, not yet taken up by Handle
	stop := func() {}
	if len(waiting) > 0 {
		stop = d.heartbeat(ctx, func() []build.Message {
			mu.Lock()
			defer mu.Unlock()
			return waiting
		})
	}
	defer stop()
	for i, m := range msgs {
		mu.Lock()
		waiting = msgs[i+1:]
		mu.Unlock()
		if d.Handle(ctx, m).Action == Deferred {
			stop()
			for _, rest := range msgs[i+1:] {
				if err := d.queue.ChangeVisibility(ctx, rest.Receipt, 0); err != nil && !errors.Is(err, build.ErrNotFound) {
					d.log.Warn("return message to queue", "message_id", rest.ID, "group_id", rest.GroupID, "err", err)
				}
			}
			return
		}
	}
}

// Handle decides one delivery and settles it on the queue: delete when
// launched or dropped, a visibility change when deferred, the dead-letter
// queue when the body cannot be parsed.
func (d *Dispatcher) Handle(ctx context.Context, m build.Message) Decision {
	req, err := build.Decode(m.Body)
	if err != nil {
		// The group is the lock key the producer meant, if it followed
		// the rules; the body says nothing reliable.
		log := d.log.With("message_id", m.ID, "group_id", m.GroupID)
		reason := fmt.Sprintf("malformed build request: %v", err)
		dec := Decision{Action: Dropped, Reason: reason, Cause: CauseMalformed}
		if err := d.queue.DeadLetter(ctx, m, reason); err != nil {
			log.Error("dead-letter malformed message", "err", err)
			dec = Decision{Action: Deferred, Reason: reason, Cause: CauseBackendError}
		} else {
			log.Warn("malformed message dead-lettered", "reason", reason)
		}
		d.obs.Decided(dec)
		return dec
	}
	stop := d.heartbeat(ctx, func() []build.Message { return []build.Message{m} })
	dec := d.decideObserved(ctx, req, m, true)
	stop()
	log := d.log.With("lock_key", req.LockKey())
	if id := cmp.Or(dec.BuildID, req.BuildID); id != "" {
		log = log.With("build_id", id)
	}
	if req.DeliveryID != "" {
		log = log.With("delivery_id", req.DeliveryID)
	}
	switch dec.Action {
	case Launched, Dropped:
		if dec.settled {
			break // deleted as the start was recorded
		}
		if err := d.queue.Delete(ctx, m.Receipt); err != nil {
			// A stale receipt: the message came back and another delivery
			// settles it; the record and the lock make that one a no-op.
			log.Warn("delete message", "err", err)
		}
	case Deferred:
		if err := d.queue.ChangeVisibility(ctx, m.Receipt, dec.Delay); err != nil {
			log.Warn("defer message", "err", err)
			break
		}
		if dec.Cause == CauseLocked {
			d.await(ctx, log, req.LockKey(), m.Receipt)
		}
	}
	return dec
}

// await leaves the receipt of a request deferred behind a held lock on the
// lock's lease: the reaper, when it releases the lock, makes the request
// visible at once instead of after its backoff (push to Pod for a busy
// branch). If the lock went meanwhile, the request is tried again now.
// Failures cost only latency: the backoff still brings the request back.
func (d *Dispatcher) await(ctx context.Context, log *slog.Logger, key, receipt string) {
	err := d.locks.Await(ctx, key, receipt)
	switch {
	case errors.Is(err, build.ErrNotFound):
		if err := d.queue.ChangeVisibility(ctx, receipt, 0); err != nil && !errors.Is(err, build.ErrNotFound) {
			log.Warn("retry a request whose lock was released meanwhile", "err", err)
		}
	case err != nil:
		log.Warn("wait for the lock; the request comes back after its backoff", "err", err)
	}
}

// heartbeat keeps received messages invisible while a slow decision runs,
// so no other consumer receives them meanwhile: every half visibility
// timeout it extends the visibility of each message pending returns by a
// full one. The returned stop (idempotent) waits for the heartbeat to end,
// so it never races the decision's own settlement of those messages.
func (d *Dispatcher) heartbeat(ctx context.Context, pending func() []build.Message) (stop func()) {
	every := d.cfg.VisibilityTimeout / 2
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				for _, m := range pending() {
					if err := d.queue.ChangeVisibility(ctx, m.Receipt, d.cfg.VisibilityTimeout); err != nil {
						d.log.Warn("extend visibility during a slow decision", "message_id", m.ID, "group_id", m.GroupID, "err", err)
					}
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}
