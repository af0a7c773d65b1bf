package awsevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// QueueName returns the SQS FIFO queue of consumer group group of the
// build events of prefix, subscribed to TopicName(prefix) with raw
// delivery. SQS queue names are at most 80 characters, ".fifo" included:
// a group too long for prefix gives ErrInvalid.
func QueueName(prefix, group string) (string, error) {
	if err := build.ValidateConsumerGroup(group); err != nil {
		return "", err
	}
	name := prefix + "-events-" + group + ".fifo"
	if err := awssqs.CheckQueueName(name, true); err != nil {
		return "", fmt.Errorf("consumer group %q: %w", group, err)
	}
	return name, nil
}

// Receive and visibility settings of a group's queue.
const (
	// DefaultReceiveWait is the long poll: an idle consumer makes ~3
	// calls a minute.
	DefaultReceiveWait = 20 * time.Second
	// visibility is how long a received event stays invisible to the
	// group's other consumers; extendEvery renews it while its handler
	// runs (or retries), so nobody else takes it meanwhile.
	visibility  = 30 * time.Second
	extendEvery = 10 * time.Second
	// callTimeout bounds a delete or visibility change made after ctx
	// ended.
	callTimeout = 10 * time.Second
)

// sqsAPI is what the Stream calls.
type sqsAPI interface {
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// Stream is the build-event stream as Decap's own consumers read it on
// AWS: each consumer group is an SQS FIFO queue subscribed to the topic
// (QueueName), which aws-resources/create-world.sh creates for the groups
// Decap uses. A build's events are one message group, so they come in
// order; several processes consuming a group share its queue. Its Tail
// reads a queue of the process's own (tail.go).
type Stream struct {
	client sqsAPI
	prefix string
	opts   StreamOptions
	log    *slog.Logger
	tail   *tailer // nil: no Tail (ErrNoTail)
}

// StreamOptions tune a Stream.
type StreamOptions struct {
	// ReceiveWait is the long poll of a receive (1-20 s; default
	// DefaultReceiveWait). On AWS a long poll returns as soon as a message
	// is there. moto's decides at its start which message groups are busy
	// and waits out the whole poll for a group freed meanwhile, so tests
	// on moto poll for less.
	ReceiveWait time.Duration
	Logger      *slog.Logger // nil: slog.Default()
	// Tail gives the stream its live tail (Tail); nil: Tail returns
	// ErrNoTail.
	Tail *TailConfig
}

// NewStream returns the stream of the queues of prefix.
func NewStream(client sqsAPI, prefix string, opts StreamOptions) *Stream {
	if opts.ReceiveWait < time.Second || opts.ReceiveWait > DefaultReceiveWait {
		opts.ReceiveWait = DefaultReceiveWait
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Stream{client: client, prefix: prefix, opts: opts, log: log.With("component", "event-stream")}
	if opts.Tail != nil && opts.Tail.SNS != nil && opts.Tail.SQS != nil {
		s.tail = newTailer(s, *opts.Tail)
	}
	return s
}

// Consume delivers the events of group's queue to handle until ctx ends
// (build.EventStream). A group whose queue does not exist gives
// ErrNotFound.
func (s *Stream) Consume(ctx context.Context, group string, handle build.EventHandler) error {
	name, err := QueueName(s.prefix, group)
	if err != nil {
		return err
	}
	out, err := s.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		var missing *types.QueueDoesNotExist
		if errors.As(err, &missing) {
			return fmt.Errorf("%w: consumer group %s has no queue %s (aws-resources/create-world.sh creates the groups' queues)", build.ErrNotFound, group, name)
		}
		return fmt.Errorf("find queue %s: %w", name, unavailable(err))
	}
	sub := &subscriber{client: s.client, wait: s.opts.ReceiveWait, log: s.log.With("group", group)}
	return events.Consume(ctx, sub, aws.ToString(out.QueueUrl), handle, s.log.With("group", group))
}

// ErrNoTail is Tail's error on a Stream made without a TailConfig.
var ErrNoTail = fmt.Errorf("%w: this event stream has no live tail (no TailConfig)", build.ErrUnavailable)

// subscriber is a watermill Subscriber of one SQS queue (its URL is the
// topic) that hands out one message at a time: it receives the next only
// once the last is acknowledged (deleted) or not (made visible again),
// and keeps the one handed out invisible meanwhile.
type subscriber struct {
	client sqsAPI
	wait   time.Duration
	log    *slog.Logger
}

func (s *subscriber) Subscribe(ctx context.Context, queueURL string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		backoff := time.Duration(0)
		for ctx.Err() == nil {
			ans, err := s.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
				QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 1, WaitTimeSeconds: int32(s.wait / time.Second),
				VisibilityTimeout: int32(visibility / time.Second),
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, 100*time.Millisecond), time.Minute)
				s.log.Warn("receive build events", "err", err, "retry_in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				continue
			}
			backoff = 0
			for _, m := range ans.Messages {
				if !s.handOut(ctx, queueURL, m, out) {
					return
				}
			}
		}
	}()
	return out, nil
}

// handOut sends m on out and waits for its Ack (delete it) or Nack (make
// it visible again), extending its visibility meanwhile. It returns false
// when ctx ended first.
func (s *subscriber) handOut(ctx context.Context, queueURL string, m types.Message, out chan<- *message.Message) bool {
	wm := message.NewMessage(aws.ToString(m.MessageId), []byte(aws.ToString(m.Body)))
	wm.SetContext(ctx)
	handle := m.ReceiptHandle
	select {
	case out <- wm:
	case <-ctx.Done():
		s.release(queueURL, handle)
		return false
	}
	tick := time.NewTicker(extendEvery)
	defer tick.Stop()
	for {
		select {
		case <-wm.Acked():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
			defer cancel()
			if _, err := s.client.DeleteMessage(cctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(queueURL), ReceiptHandle: handle}); err != nil {
				// It comes again after its visibility timeout: at least once.
				s.log.Warn("delete a handled build event", "message_id", wm.UUID, "err", err)
			}
			return true
		case <-wm.Nacked():
			s.release(queueURL, handle)
			return ctx.Err() == nil
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			_, err := s.client.ChangeMessageVisibility(cctx, &sqs.ChangeMessageVisibilityInput{
				QueueUrl: aws.String(queueURL), ReceiptHandle: handle, VisibilityTimeout: int32(visibility / time.Second)})
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("keep a build event invisible while it is handled", "message_id", wm.UUID, "err", err)
			}
		}
	}
}

// release makes a message handed out and not handled visible again at
// once, for the group's next consumer.
func (s *subscriber) release(queueURL string, handle *string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := s.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(queueURL), ReceiptHandle: handle, VisibilityTimeout: 0}); err != nil {
		s.log.Warn("give back an unhandled build event", "err", err)
	}
}

func (s *subscriber) Close() error { return nil }
