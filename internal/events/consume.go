package events

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
)

// Retry bounds of Consume: a handler's error is retried after
// MinRetry, doubling up to MaxRetry.
const (
	MinRetry = 100 * time.Millisecond
	MaxRetry = time.Minute
)

// Consume subscribes sub to topic and hands each event to handle, one at
// a time, until ctx ends; then it returns an error wrapping ctx.Err(). A
// handler's error is retried in place with a backoff (MinRetry doubling
// up to MaxRetry), so the build's later events wait behind it; the
// message is acknowledged once handle returns nil, and left
// unacknowledged (Nack) when ctx ends first, so it comes again. A message
// that is no event (build.DecodeEvent refuses it) is logged and
// acknowledged: retrying it would block the stream for nothing.
func Consume(ctx context.Context, sub message.Subscriber, topic string, handle build.EventHandler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	for {
		var m *message.Message
		var ok bool
		select {
		case <-ctx.Done():
			return fmt.Errorf("consume %s: %w", topic, ctx.Err())
		case m, ok = <-msgs:
		}
		if !ok {
			if ctx.Err() != nil {
				return fmt.Errorf("consume %s: %w", topic, ctx.Err())
			}
			return fmt.Errorf("consume %s: the subscription ended", topic)
		}
		e, err := EventOf(m)
		if err != nil {
			log.Warn("drop a message that is no build event", "message_id", m.UUID, "err", err)
			m.Ack()
			continue
		}
		if !handleUntilDone(ctx, e, handle, log) {
			m.Nack()
			return fmt.Errorf("consume %s: %w", topic, ctx.Err())
		}
		m.Ack()
	}
}

// handleUntilDone calls handle until it returns nil (true) or ctx ends
// (false).
func handleUntilDone(ctx context.Context, e build.Event, handle build.EventHandler, log *slog.Logger) bool {
	wait := MinRetry
	for attempt := 1; ; attempt++ {
		err := handle(ctx, e)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn("handle build event", "event_id", e.ID, "build_id", e.Subject, "attempt", attempt, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, MaxRetry)
	}
}
