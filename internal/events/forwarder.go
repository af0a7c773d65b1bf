package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
)

// Defaults of ForwarderConfig.
const (
	DefaultBatch = 100
	// DefaultSweep is how long Pending waits for an event when the outbox
	// is empty. A write in the forwarder's own process wakes it at once
	// (on every backend; a write in another process does not: that
	// process's own forwarder publishes it, and waking every forwarder
	// would have them all publish each event); the sweep bounds how long
	// an event another process wrote and did not forward (it crashed)
	// waits.
	DefaultSweep = 5 * time.Second
	// DefaultPublishTimeout bounds one round of publishes, so that a
	// forwarder that stalls cannot publish an event long after another
	// forwarder did (the FIFO topic drops a second publish within 5
	// minutes).
	DefaultPublishTimeout = 30 * time.Second
)

// Observer is told what the forwarder does (metrics).
type Observer interface {
	// EventPublished counts one publish of an event to the stream.
	EventPublished(err error)
	// EventsForwarded counts events published and removed from the outbox.
	EventsForwarded(n int)
	// OutboxLag is the age of the oldest event a round found pending (0
	// when the outbox was empty).
	OutboxLag(d time.Duration)
}

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	// Topic is the stream's topic (the SNS topic's ARN or name, the SQLite
	// stream's topic).
	Topic string
	// Source is every event's CloudEvents source (DECAP_PUBLIC_URL).
	Source   string
	Batch    int           // events per round (default DefaultBatch)
	Sweep    time.Duration // see DefaultSweep
	Timeout  time.Duration // see DefaultPublishTimeout
	Observer Observer      // nil: none
	Logger   *slog.Logger  // nil: slog.Default()
	Now      func() time.Time
}

// Forwarder publishes the events of an outbox to the stream, in order per
// build, and removes them from the outbox once published: at least once,
// since a crash between the publish and the removal publishes the event
// again (the stream drops the second publish by its ID). Several
// forwarders may run on one outbox (one in each service that writes
// records); the outbox's Pending keeps each build's order among them.
type Forwarder struct {
	outbox build.EventOutbox
	pub    message.Publisher
	cfg    ForwarderConfig
	log    *slog.Logger
}

// NewForwarder returns a forwarder from outbox to pub. An empty topic or
// source gives ErrInvalid.
func NewForwarder(outbox build.EventOutbox, pub message.Publisher, cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.Topic == "" || cfg.Source == "" {
		return nil, fmt.Errorf("%w: the event forwarder needs a topic and a source (DECAP_PUBLIC_URL)", build.ErrInvalid)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = DefaultSweep
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultPublishTimeout
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Forwarder{outbox: outbox, pub: pub, cfg: cfg, log: log.With("component", "event-forwarder")}, nil
}

// Run forwards until ctx ends, then returns nil. A failed round is logged
// and tried again after a backoff (up to a minute).
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		_, err := f.Forward(ctx, f.cfg.Sweep)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, 100*time.Millisecond), time.Minute)
			f.log.Warn("forward build events", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		default:
			backoff = 0
		}
	}
	return nil
}

// Forward runs one round: it takes up to a batch of pending events
// (waiting up to wait for the first), publishes them one by one in the
// order given, and removes the published ones from the outbox. It stops
// at the first failed publish, so that no later event of its build goes
// out before it. It returns how many events it forwarded.
func (f *Forwarder) Forward(ctx context.Context, wait time.Duration) (int, error) {
	evs, err := f.outbox.Pending(ctx, f.cfg.Batch, wait)
	if err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	if len(evs) == 0 {
		f.cfg.Observer.OutboxLag(0)
		return 0, nil
	}
	oldest := evs[0].Time
	for _, e := range evs {
		if e.Time.Before(oldest) {
			oldest = e.Time
		}
	}
	f.cfg.Observer.OutboxLag(max(f.cfg.Now().Sub(oldest), 0))

	pctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	published := make([]build.Event, 0, len(evs))
	var perr error
	for _, e := range evs {
		e.Source = f.cfg.Source
		m, err := Message(e)
		if err != nil {
			// An event this Decap wrote and cannot encode is a bug;
			// publishing the build's later events would skip it.
			perr = fmt.Errorf("encode event %s: %w", e.ID, err)
			break
		}
		m.SetContext(pctx)
		err = f.pub.Publish(f.cfg.Topic, m)
		f.cfg.Observer.EventPublished(err)
		if err != nil {
			perr = fmt.Errorf("publish event %s: %w", e.ID, err)
			break
		}
		if pctx.Err() != nil {
			perr = fmt.Errorf("publish event %s: %w", e.ID, pctx.Err())
			break
		}
		published = append(published, e)
	}
	if len(published) > 0 {
		// The removal outlives a cancelled round: what went out must
		// leave the outbox, or it goes out again.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.Timeout)
		defer rcancel()
		if err := f.outbox.Forwarded(rctx, published...); err != nil {
			return 0, errors.Join(perr, fmt.Errorf("remove %d forwarded events from the outbox: %w", len(published), err))
		}
		f.cfg.Observer.EventsForwarded(len(published))
	}
	return len(published), perr
}

type nopObserver struct{}

func (nopObserver) EventPublished(error)    {}
func (nopObserver) EventsForwarded(int)     {}
func (nopObserver) OutboxLag(time.Duration) {}
