package buildtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// TestEventOutbox runs the contract of a Records store's event outbox
// (build.EventOutbox, invariant 7): every write that changes a record
// emits exactly one event, "<buildId>:<version>" with versions 1, 2, 3…
// per build; a write that changes nothing or is refused emits none;
// Pending keeps each build's order (only a run of versions whose
// predecessor left the outbox), waits, wakes on a write and honours its
// context; Forwarded removes, idempotently. open must return a new, empty
// store and its outbox. Subtests run in parallel.
//
// The suite does not assume the outbox shows an event the moment its write
// returns (a store may read its outbox from an index that lags): it polls
// Pending until the events it expects are there, and uses a later change
// of the same build as the barrier behind which a stray event would show.
func TestEventOutbox(t *testing.T, open func(t *testing.T) (Records, build.EventOutbox)) {
	for name, test := range map[string]func(*testing.T, func(*testing.T) (Records, build.EventOutbox)){
		"save transitions":   TestEventOutboxSave,
		"end waiting":        TestEventOutboxEndWaiting,
		"retry":              TestEventOutboxRetry,
		"order":              TestEventOutboxOrder,
		"forwarded":          TestEventOutboxForwarded,
		"wait":               TestEventOutboxWait,
		"concurrent writers": TestEventOutboxConcurrent,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, open)
		})
	}
}

// outboxTimeout bounds how long the suite waits for an event to show.
const outboxTimeout = 15 * time.Second

// changes keeps the records a build's accepted changes left, in order:
// the events the outbox must hold for it.
type changes struct {
	t    *testing.T
	s    Records
	id   build.ID
	want []build.Record
}

// save saves r, which must change the record: one event more.
func (c *changes) save(r build.Record) build.Record {
	c.t.Helper()
	saveRecord(c.t, c.s, r)
	return c.stored()
}

// same saves r, which changes nothing: no event.
func (c *changes) same(r build.Record) {
	c.t.Helper()
	saveRecord(c.t, c.s, r)
	got := getRecord(c.t, c.s, c.id)
	if last := c.want[len(c.want)-1]; !build.SameRecord(last, got) {
		c.t.Fatalf("a Save of the record as stored changed it:\nbefore %+v\nafter  %+v", last, got)
	}
}

// refused calls write, which must fail with want and change nothing.
func (c *changes) refused(what string, want error, write func() error) {
	c.t.Helper()
	if err := write(); !errors.Is(err, want) {
		c.t.Fatalf("%s error = %v, want %v", what, err, want)
	}
	if len(c.want) == 0 {
		return
	}
	if got := getRecord(c.t, c.s, c.id); !build.SameRecord(c.want[len(c.want)-1], got) {
		c.t.Fatalf("%s (refused) changed the record to %+v", what, got)
	}
}

// endWaiting ends the waiting record as r: one event more.
func (c *changes) endWaiting(r build.Record) build.Record {
	c.t.Helper()
	if err := c.s.EndWaiting(c.t.Context(), r); err != nil {
		c.t.Fatalf("EndWaiting(%s, %s) error = %v", r.BuildID, r.Status, err)
	}
	return c.stored()
}

func (c *changes) stored() build.Record {
	c.t.Helper()
	got := getRecord(c.t, c.s, c.id)
	c.want = append(c.want, got)
	return got
}

// check waits until the outbox holds the build's last expected event, and
// then compares the build's pending events with the changes: one event
// each, in order, ids <build>:1, :2, …, and no more.
func (c *changes) check(o build.EventOutbox) {
	c.t.Helper()
	last := build.EventID(c.id, len(c.want))
	evs := waitForEvents(c.t, o, last)
	checkEvents(c.t, c.id, 1, eventsOf(evs, c.id), c.want)
	// A stray event after the last change would be the next version.
	if more := eventsOf(pendingNow(c.t, o, 200*time.Millisecond), c.id); len(more) > len(c.want) {
		c.t.Errorf("build %s has %d events pending, want %d: extra %v", c.id, len(more), len(c.want), eventIDs(more[len(c.want):]))
	}
}

// checkEvents compares a build's events, as Pending returned them, with
// the records its changes left, the first its version from.
func checkEvents(t *testing.T, id build.ID, from int, got []build.Event, want []build.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("build %s has %d events %v, want %d (one per change)", id, len(got), eventIDs(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		e, r, v := got[i], want[i], from+i
		switch {
		case e.ID != build.EventID(id, v) || e.Version != v || e.Subject != id:
			t.Errorf("event %d of build %s is id %q version %d subject %q, want %q", v, id, e.ID, e.Version, e.Subject, build.EventID(id, v))
		case e.Type != build.EventTypeOf(r, v == 1):
			t.Errorf("event %s has type %s, want %s (record %s)", e.ID, e.Type, build.EventTypeOf(r, v == 1), r.Status)
		case !build.SameRecord(r, e.Record) || e.Record.Number != r.Number:
			t.Errorf("event %s has record\n%+v\nwant the record as the change left it\n%+v", e.ID, e.Record, r)
		case e.Source != "":
			t.Errorf("event %s has source %q: the store leaves it to the forwarder", e.ID, e.Source)
		case e.Time.IsZero() || time.Since(e.Time) > time.Hour || time.Until(e.Time) > time.Minute:
			t.Errorf("event %s has time %v, want the time of the write", e.ID, e.Time)
		}
	}
}

// TestEventOutboxSave takes a record through the Saves of its life: each
// change is one event; a repeated Save, a Save the launch claim makes the
// same, and refused Saves are none.
func TestEventOutboxSave(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	r := newRecord(base, "ae6rt", "events", build.StatusQueued)
	r.SHA, r.RequestedBy = "0123456789abcdef0123456789abcdef01234567", "octocat"
	c := &changes{t: t, s: s, id: r.BuildID}

	c.refused("Save with no status", build.ErrInvalid, func() error {
		bad := r
		bad.Status = ""
		return s.Save(t.Context(), bad)
	})
	queued := c.save(r) // v1 queued
	c.same(r)
	renumbered := r
	renumbered.Number = queued.Number + 7 // the store's own field: ignored
	c.same(renumbered)

	claimed := queued
	if err := claimed.Launching(base.Add(time.Second), 2, true); err != nil {
		t.Fatal(err)
	}
	if err := claimed.GrantSecrets([]string{"NPM_TOKEN"}, ""); err != nil {
		t.Fatal(err)
	}
	claimed = c.save(claimed) // v2 queued, claimed
	c.same(r)                 // a writer that read it before the claim: KeepClaim makes it the same

	deferred := claimed
	if err := deferred.Defer(base.Add(2*time.Second), base.Add(time.Minute), "lock busy"); err != nil {
		t.Fatal(err)
	}
	deferred = c.save(deferred) // v3 deferred
	c.same(deferred)

	running := deferred
	if err := running.Start(base.Add(3*time.Second), "build-pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	running = c.save(running) // v4 started
	c.refused("Save of the deferred record over the running one", build.ErrConflict, func() error {
		return s.Save(t.Context(), deferred)
	})
	cancel := running
	if err := cancel.RequestCancel(base.Add(4 * time.Second)); err != nil {
		t.Fatal(err)
	}
	cancel = c.save(cancel) // v5 started, cancel requested
	again := cancel
	if err := again.RequestCancel(base.Add(5 * time.Second)); err != nil { // keeps the first time
		t.Fatal(err)
	}
	c.same(again)

	ended := cancel
	code := 143
	if err := ended.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusCancelled, ExitCode: &code, Reason: "cancelled"}, base.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	ended = c.save(ended) // v6 cancelled
	c.refused("Save of the final record again", build.ErrConflict, func() error { return s.Save(t.Context(), ended) })
	c.refused("Save of a running record over the final one", build.ErrConflict, func() error { return s.Save(t.Context(), cancel) })
	c.refused("EndWaiting of the final record", build.ErrConflict, func() error {
		end := ended
		end.Status = build.StatusExpired
		return s.EndWaiting(t.Context(), end)
	})
	c.check(o)

	// A build dropped while waiting: created, dropped.
	dropped := newRecord(base.Add(time.Second), "ae6rt", "events", build.StatusQueued)
	d := &changes{t: t, s: s, id: dropped.BuildID}
	dropped = d.save(dropped)
	if err := dropped.Drop(build.StatusExpired, "waited too long", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.save(dropped)
	d.check(o)
}

// TestEventOutboxEndWaiting: an EndWaiting that ends the record is one
// event; one refused (launching, not final, ended, missing) is none.
func TestEventOutboxEndWaiting(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	newer := build.NewID(base.Add(time.Hour))
	superseded := func(r build.Record) build.Record {
		if err := r.Supersede(base.Add(time.Minute), newer); err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Ended: queued, superseded; then every further end refused.
	r := newRecord(base, "ae6rt", "events", build.StatusQueued)
	ended := &changes{t: t, s: s, id: r.BuildID}
	queued := ended.save(r)
	ended.refused("EndWaiting with a status that is not final", build.ErrInvalid, func() error {
		run := queued
		run.Status = build.StatusRunning
		return s.EndWaiting(t.Context(), run)
	})
	ended.endWaiting(superseded(queued))
	ended.refused("EndWaiting of the ended record", build.ErrConflict, func() error {
		return s.EndWaiting(t.Context(), superseded(queued))
	})
	ended.refused("Save of the waiting record over the ended one", build.ErrConflict, func() error {
		return s.Save(t.Context(), queued)
	})
	ended.check(o)

	// Being launched: the end refused, the launch goes on.
	l := newRecord(base.Add(time.Second), "ae6rt", "events", build.StatusQueued)
	launched := &changes{t: t, s: s, id: l.BuildID}
	claimed := launched.save(l)
	if err := claimed.Launching(base.Add(2*time.Second), 0, true); err != nil {
		t.Fatal(err)
	}
	claimed = launched.save(claimed)
	launched.refused("EndWaiting of a record being launched", build.ErrConflict, func() error {
		return s.EndWaiting(t.Context(), superseded(claimed))
	})
	if err := claimed.Start(base.Add(3*time.Second), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	launched.save(claimed)
	launched.check(o)

	// Missing: refused, and no event of that build.
	missing := newRecord(base.Add(2*time.Second), "ae6rt", "events", build.StatusQueued)
	if err := s.EndWaiting(t.Context(), superseded(missing)); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("EndWaiting() of a missing record error = %v, want ErrNotFound", err)
	}
	if evs := eventsOf(pendingNow(t, o, 100*time.Millisecond), missing.BuildID); len(evs) > 0 {
		t.Errorf("a refused EndWaiting of a missing record wrote events %v", eventIDs(evs))
	}
}

// TestEventOutboxRetry: the creation of a retry's waiting record is a
// "retried" event, its version 1.
func TestEventOutboxRetry(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	failed := newRecord(base, "ae6rt", "events", build.StatusErrored)
	failed.Infra, failed.InfraRetries, failed.FinishedAt, failed.StartedAt = build.InfraKilled, 1, base.Add(time.Minute), base.Add(time.Second)
	failed.Reason = "killed"
	first := &changes{t: t, s: s, id: failed.BuildID}
	failed = first.save(failed)
	_, retry, err := failed.NextAttempt()
	if err != nil {
		t.Fatal(err)
	}
	second := &changes{t: t, s: s, id: retry.BuildID}
	second.save(retry)
	second.same(retry) // the reaper made it again after a crash
	first.check(o)
	second.check(o)
	if evs := eventsOf(pendingNow(t, o, 0), retry.BuildID); len(evs) > 0 && evs[0].Type != build.EventRetried {
		t.Errorf("the retry's first event has type %s, want %s", evs[0].Type, build.EventRetried)
	}
}

// TestEventOutboxOrder: Pending returns each build's events in version
// order and, when it returns fewer than pend, for each build a run from
// its oldest pending version, never a later version without the earlier
// one; the oldest pending event is never left behind. Forwarding what it
// returns, a little at a time, gives every event once, in order per build.
func TestEventOutboxOrder(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	const builds, steps = 3, 4
	cs := make([]*changes, builds)
	recs := make([]build.Record, builds)
	for i := range builds {
		recs[i] = newRecord(base.Add(time.Duration(i)*time.Second), "ae6rt", fmt.Sprintf("order%d", i), build.StatusQueued)
		cs[i] = &changes{t: t, s: s, id: recs[i].BuildID}
	}
	// Interleaved: each round changes every build once, the builds in
	// turn; each change a new deferral.
	for step := range steps {
		for i := range builds {
			if step > 0 {
				if err := recs[i].Defer(base, base.Add(time.Duration(step)*time.Minute), fmt.Sprintf("busy %d", step)); err != nil {
					t.Fatal(err)
				}
			}
			recs[i] = cs[i].save(recs[i])
		}
	}
	var last []string
	for _, c := range cs {
		last = append(last, build.EventID(c.id, steps))
	}
	all := waitForEvents(t, o, last...)
	for _, c := range cs {
		checkEvents(t, c.id, 1, eventsOf(all, c.id), c.want)
	}
	if len(all) != builds*steps {
		t.Fatalf("Pending() returned %d events %v, want %d", len(all), eventIDs(all), builds*steps)
	}
	oldest := build.EventID(cs[0].id, 1)
	for max := 1; max < builds*steps; max++ {
		got, err := o.Pending(t.Context(), max, time.Second)
		if err != nil {
			t.Fatalf("Pending(max %d) error = %v", max, err)
		}
		if len(got) == 0 || len(got) > max {
			t.Fatalf("Pending(max %d) returned %d events, want 1 to %d", max, len(got), max)
		}
		if !slices.Contains(eventIDs(got), oldest) {
			t.Errorf("Pending(max %d) = %v left the oldest event %s behind", max, eventIDs(got), oldest)
		}
		checkRuns(t, fmt.Sprintf("Pending(max %d)", max), got, nil)
	}

	// Forward two at a time: every event once, each build's in order.
	forwarded := map[build.ID]int{} // build → last version forwarded
	seen := map[string]bool{}
	deadline := time.Now().Add(outboxTimeout)
	for len(seen) < builds*steps {
		if time.Now().After(deadline) {
			t.Fatalf("forwarded %d of %d events before the deadline", len(seen), builds*steps)
		}
		got, err := o.Pending(t.Context(), 2, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		checkRuns(t, "Pending(max 2) while forwarding", got, forwarded)
		for _, e := range got {
			if seen[e.ID] { // a store whose reads lag may show it again
				continue
			}
			if e.Version != forwarded[e.Subject]+1 {
				t.Fatalf("forwarding gave %s after version %d of its build", e.ID, forwarded[e.Subject])
			}
			seen[e.ID], forwarded[e.Subject] = true, e.Version
		}
		if err := o.Forwarded(t.Context(), got...); err != nil {
			t.Fatalf("Forwarded() error = %v", err)
		}
	}
	waitOutboxEmpty(t, o)
}

// checkRuns checks that evs holds, for each build, consecutive versions in
// order, starting right after the build's last forwarded version (from
// version 1 when forwarded is nil).
func checkRuns(t *testing.T, what string, evs []build.Event, forwarded map[build.ID]int) {
	t.Helper()
	next := map[build.ID]int{}
	for _, e := range evs {
		want, ok := next[e.Subject]
		if !ok {
			want = 1
			if forwarded != nil {
				want = forwarded[e.Subject] + 1
				if e.Version < want { // shown again by a lagging read
					want = e.Version
				}
			}
		}
		if e.Version != want {
			t.Errorf("%s = %v: %s where version %d of its build was due", what, eventIDs(evs), e.ID, want)
			return
		}
		next[e.Subject] = want + 1
	}
}

// TestEventOutboxForwarded: Forwarded removes the events given, only them,
// and removing an event again (or one never written) is no error.
func TestEventOutboxForwarded(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	r := newRecord(base, "ae6rt", "events", build.StatusQueued)
	c := &changes{t: t, s: s, id: r.BuildID}
	r = c.save(r)
	if err := r.Defer(base, base.Add(time.Minute), "busy"); err != nil {
		t.Fatal(err)
	}
	r = c.save(r)
	if err := r.Start(base.Add(time.Minute), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	c.save(r)
	evs := eventsOf(waitForEvents(t, o, build.EventID(r.BuildID, 3)), r.BuildID)
	if len(evs) != 3 {
		t.Fatalf("pending %v, want 3 events", eventIDs(evs))
	}
	if err := o.Forwarded(t.Context(), evs[0]); err != nil {
		t.Fatalf("Forwarded() error = %v", err)
	}
	rest := waitUntil(t, o, "the forwarded event leaves the outbox", func(evs []build.Event) bool {
		return !slices.Contains(eventIDs(eventsOf(evs, r.BuildID)), build.EventID(r.BuildID, 1))
	})
	if got, want := eventIDs(eventsOf(rest, r.BuildID)), []string{build.EventID(r.BuildID, 2), build.EventID(r.BuildID, 3)}; !slices.Equal(got, want) {
		t.Errorf("pending after Forwarded(v1) = %v, want %v", got, want)
	}
	if err := o.Forwarded(t.Context(), evs...); err != nil { // v1 again, v2, v3
		t.Fatalf("Forwarded() of events partly gone error = %v", err)
	}
	if err := o.Forwarded(t.Context(), evs...); err != nil {
		t.Fatalf("Forwarded() again error = %v", err)
	}
	unknown := build.NewEvent(newRecord(base, "ae6rt", "events", build.StatusQueued), 1, base)
	if err := o.Forwarded(t.Context(), unknown); err != nil {
		t.Fatalf("Forwarded() of an event never written error = %v", err)
	}
	if err := o.Forwarded(t.Context()); err != nil {
		t.Fatalf("Forwarded() of nothing error = %v", err)
	}
	waitOutboxEmpty(t, o)

	// The build's next change is version 4: forwarding does not reset
	// the count.
	if err := r.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	c.save(r)
	got := eventsOf(waitForEvents(t, o, build.EventID(r.BuildID, 4)), r.BuildID)
	checkEvents(t, r.BuildID, 4, got, c.want[3:])
}

// TestEventOutboxWait: Pending on an empty outbox waits up to wait and
// returns nothing; a write meanwhile returns it early; a context that ends
// meanwhile gives an error wrapping ctx.Err().
func TestEventOutboxWait(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)

	t.Run("empty", func(t *testing.T) {
		const wait = 150 * time.Millisecond
		start := time.Now()
		evs, err := o.Pending(t.Context(), 10, wait)
		if took := time.Since(start); err != nil || len(evs) != 0 || took < wait*9/10 {
			t.Errorf("Pending(wait %v) on an empty outbox = %v, %v after %v, want nothing after the wait", wait, eventIDs(evs), err, took)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		done := make(chan error, 1)
		go func() {
			_, err := o.Pending(ctx, 10, time.Minute)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Pending() with its context cancelled during the wait error = %v, want one wrapping context.Canceled", err)
			}
		case <-time.After(outboxTimeout):
			t.Fatal("Pending() went on waiting after its context was cancelled")
		}
		dctx, dcancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer dcancel()
		if _, err := o.Pending(dctx, 10, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Pending() past its context's deadline error = %v, want one wrapping context.DeadlineExceeded", err)
		}
	})

	t.Run("woken by a write", func(t *testing.T) {
		r := newRecord(base, "ae6rt", "events", build.StatusQueued)
		type result struct {
			evs []build.Event
			err error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			evs, err := o.Pending(t.Context(), 10, time.Minute)
			done <- result{evs, err}
		}()
		time.Sleep(100 * time.Millisecond) // Pending is waiting
		saveRecord(t, s, r)
		select {
		case res := <-done:
			if res.err != nil {
				t.Fatalf("Pending() error = %v", res.err)
			}
			if got := eventIDs(res.evs); !slices.Equal(got, []string{build.EventID(r.BuildID, 1)}) {
				t.Errorf("Pending() woken by a write = %v, want the write's event", got)
			}
		case <-time.After(outboxTimeout):
			t.Fatalf("Pending(wait 1m) did not return within %v of a write (started %v ago)", outboxTimeout, time.Since(start))
		}
	})
}

// TestEventOutboxConcurrent changes several builds at once, each change
// saved by three writers at once (one changes the record, the others find
// it changed), while two forwarders publish the outbox: each change is
// one event, and each build's events are published once each, in order.
func TestEventOutboxConcurrent(t *testing.T, open func(*testing.T) (Records, build.EventOutbox)) {
	s, o := open(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	stream := NewStream()
	ctx, cancel := context.WithCancel(t.Context())
	var fwd sync.WaitGroup
	for range 2 {
		f, err := events.NewForwarder(o, stream, events.ForwarderConfig{Topic: "build-events", Source: "https://decap.test",
			Batch: 3, Sweep: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		fwd.Go(func() { f.Run(ctx) })
	}
	defer func() { cancel(); fwd.Wait() }()

	const builds, writers = 6, 3
	var wg sync.WaitGroup
	ids := make([]build.ID, builds)
	for i := range builds {
		r := newRecord(base.Add(time.Duration(i)*time.Millisecond), "ae6rt", fmt.Sprintf("conc%d", i%2), build.StatusQueued)
		ids[i] = r.BuildID
		wg.Go(func() {
			steps := lifeOf(t, r, base)
			for _, step := range steps {
				var sw sync.WaitGroup
				for range writers {
					sw.Go(func() {
						// Of identical final Saves, those after the first
						// find the record final: refused, and no event.
						err := s.Save(ctx, step)
						if err != nil && !(step.Status.Final() && errors.Is(err, build.ErrConflict)) {
							t.Errorf("Save(%s, %s) error = %v", step.BuildID, step.Status, err)
						}
					})
				}
				sw.Wait()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const perBuild = 4 // lifeOf's changes
	deadline := time.Now().Add(outboxTimeout)
	for len(stream.Published()) < builds*perBuild && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	published := stream.Published()
	for _, id := range ids {
		var got []int
		for _, e := range published {
			if e.Subject == id {
				got = append(got, e.Version)
			}
		}
		if want := []int{1, 2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("build %s's events were published as versions %v, want %v (one per change, in order)", id, got, want)
		}
	}
	if len(published) > builds*perBuild {
		t.Errorf("%d events published, want %d", len(published), builds*perBuild)
	}
	waitOutboxEmpty(t, o)
}

// lifeOf returns the records of a build's life from queued r: queued,
// deferred, running, succeeded.
func lifeOf(t *testing.T, r build.Record, base time.Time) []build.Record {
	life := []build.Record{r}
	if err := r.Defer(base, base.Add(time.Minute), "busy"); err != nil {
		t.Error(err)
	}
	life = append(life, r)
	if err := r.Start(base.Add(time.Second), "pod", "c0ffee"); err != nil {
		t.Error(err)
	}
	life = append(life, r)
	if err := r.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(time.Minute)); err != nil {
		t.Error(err)
	}
	return append(life, r)
}

// pendingNow returns what Pending returns after waiting up to wait.
func pendingNow(t *testing.T, o build.EventOutbox, wait time.Duration) []build.Event {
	t.Helper()
	evs, err := o.Pending(t.Context(), 1000, wait)
	if err != nil {
		t.Fatalf("Pending() error = %v", err)
	}
	return evs
}

// waitForEvents polls Pending until it returns every event in ids, and
// returns that answer.
func waitForEvents(t *testing.T, o build.EventOutbox, ids ...string) []build.Event {
	t.Helper()
	return waitUntil(t, o, fmt.Sprintf("events %v are pending", ids), func(evs []build.Event) bool {
		got := eventIDs(evs)
		for _, id := range ids {
			if !slices.Contains(got, id) {
				return false
			}
		}
		return true
	})
}

// waitUntil polls Pending until done holds for its answer, and returns it.
func waitUntil(t *testing.T, o build.EventOutbox, what string, done func([]build.Event) bool) []build.Event {
	t.Helper()
	deadline := time.Now().Add(outboxTimeout)
	for {
		evs := pendingNow(t, o, 50*time.Millisecond)
		if done(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v until %s; pending %v", outboxTimeout, what, eventIDs(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitOutboxEmpty(t *testing.T, o build.EventOutbox) {
	t.Helper()
	waitUntil(t, o, "the outbox is empty", func(evs []build.Event) bool { return len(evs) == 0 })
}

// eventsOf returns the events of build id in evs, in their order.
func eventsOf(evs []build.Event, id build.ID) []build.Event {
	var out []build.Event
	for _, e := range evs {
		if e.Subject == id {
			out = append(out, e)
		}
	}
	return out
}

func eventIDs(evs []build.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
