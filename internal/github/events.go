package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// StatusConsumerGroup is the commit statuses' consumer group on the
// build-event stream.
const StatusConsumerGroup = "github-statuses"

// DefaultStatusMaxAge is how old an event may be and still have its
// status retried: see StatusEvents.
const DefaultStatusMaxAge = time.Hour

// maxRemembered bounds how many builds' last statuses StatusEvents keeps.
const maxRemembered = 4096

// StatusEvents posts commit statuses from the build-event stream, off the
// request path: its Handle is the build.EventHandler of the consumer
// group StatusConsumerGroup. A build's creation (queued, or retried: a
// new attempt) posts pending "queued", its start pending "running", its
// end what Statuses.BuildEnded posts (success, failure or error; nothing
// for a skipped or superseded build); other events post nothing, nor
// does a status the build already got from this process (a repeated
// "started": a cancel request).
//
// A failure GitHub may get over (build.ErrUnavailable: 5xx, network,
// rate limit) is returned, so that the stream delivers the event again
// after a backoff and the build's later statuses wait behind it, in
// order: a GitHub outage delays statuses, it does not lose them. Such an
// event older than maxAge is dropped instead (logged), so that a status
// GitHub refuses for good with a 5xx holds the others back for maxAge at
// most. Any other failure (a 4xx: unknown repository, bad token) is
// logged and dropped.
type StatusEvents struct {
	s      *Statuses
	log    *slog.Logger
	now    func() time.Time
	maxAge time.Duration

	mu     sync.Mutex
	posted map[build.ID]string // a build's last status: "<state> <description>"
}

// NewStatusEvents returns the handler of the statuses of s; maxAge <= 0
// is DefaultStatusMaxAge, a nil log slog.Default(), a nil now time.Now.
func NewStatusEvents(s *Statuses, log *slog.Logger, now func() time.Time, maxAge time.Duration) *StatusEvents {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	if maxAge <= 0 {
		maxAge = DefaultStatusMaxAge
	}
	return &StatusEvents{s: s, log: log, now: now, maxAge: maxAge, posted: map[build.ID]string{}}
}

// Handle posts e's commit status, if it has one; see StatusEvents.
func (h *StatusEvents) Handle(ctx context.Context, e build.Event) error {
	state, desc := statusOf(e)
	if state == "" || h.already(e.Subject, state+" "+desc) {
		return nil
	}
	// One try: the stream's redelivery is the retry.
	err := h.s.postTries(ctx, e.Record, state, desc, 1)
	log := h.log.With("build_id", e.Subject, "event_id", e.ID, "state", state)
	switch {
	case err == nil:
		h.remember(e.Subject, state+" "+desc, e.Record.Status.Final())
		return nil
	case ctx.Err() != nil:
		return err
	case errors.Is(err, build.ErrUnavailable):
		if age := h.now().Sub(e.Time); age > h.maxAge {
			log.Error("commit status given up: GitHub has not taken it since the event", "age", age.Round(time.Second), "err", err)
			return nil
		}
		// The stream retries the event quietly: say here why it waits.
		log.Warn("commit status not posted; it is tried again", "err", err)
		return fmt.Errorf("commit status of event %s: %w", e.ID, err)
	default:
		log.Warn("commit status dropped", "err", err)
		return nil
	}
}

// statusOf returns the commit status of e's change: "" for none.
func statusOf(e build.Event) (state, description string) {
	rec := e.Record
	switch {
	case (e.Type == build.EventQueued || e.Type == build.EventRetried) && e.Version == 1:
		return "pending", fmt.Sprintf("build %s queued", shortID(rec.BuildID))
	case e.Type == build.EventStarted:
		return "pending", fmt.Sprintf("build %s running", shortID(rec.BuildID))
	case rec.Status.Final():
		return ended(rec)
	}
	return "", ""
}

// already reports whether this process posted status for id last.
func (h *StatusEvents) already(id build.ID, status string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.posted[id] == status
}

// remember notes id's last status; a final one ends the build's entry.
func (h *StatusEvents) remember(id build.ID, status string, final bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if final {
		delete(h.posted, id)
		return
	}
	if len(h.posted) >= maxRemembered {
		clear(h.posted) // forgetting costs at most a repeated status
	}
	h.posted[id] = status
}

// EventConsumer is the build-event stream as StatusEvents.Run reads it
// (build.EventStream's Consume).
type EventConsumer interface {
	Consume(ctx context.Context, group string, handle build.EventHandler) error
}

// Run consumes the stream's events for StatusConsumerGroup until ctx
// ends, and then returns nil. A consume that ends with an error (the
// store failed) is logged and started again after a pause that doubles
// up to a minute.
func (h *StatusEvents) Run(ctx context.Context, stream EventConsumer) error {
	wait := time.Second
	for {
		err := stream.Consume(ctx, StatusConsumerGroup, h.Handle)
		if ctx.Err() != nil {
			return nil
		}
		h.log.Error("commit statuses stopped reading the build events; starting again", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, time.Minute)
	}
}

// WaitingOnly is Statuses for ingest where the builds' statuses come from
// the build-event stream (StatusEvents, in the reaper): it posts only the
// "waiting for approval" statuses of pull requests, which are no build's
// events; BuildQueued and BuildEnded post nothing.
type WaitingOnly struct{ *Statuses }

// BuildQueued does nothing: StatusEvents posts it.
func (WaitingOnly) BuildQueued(context.Context, build.Record) error { return nil }

// BuildEnded does nothing: StatusEvents posts it.
func (WaitingOnly) BuildEnded(context.Context, build.Record) error { return nil }
