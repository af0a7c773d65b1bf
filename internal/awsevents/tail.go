package awsevents

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
)

// The live tail on AWS (Stream.Tail, for GET /api/v1/events). SNS keeps
// no history to read from "now", so each process that tails (ingest)
// makes an SQS FIFO queue of its own, <prefix>-tail-<random>.fifo,
// subscribes it to the topic with raw delivery, long-polls it and hands
// each event to every Tail of the process. The queue is made when the
// first Tail starts, shared by every Tail of the process, kept for
// TailConfig.Linger after the last one ends (a page that reconnects does
// not make a new queue), and then unsubscribed and deleted; Stream.Close
// does the same at shutdown.
//
// A process killed before it deleted its queue leaves it subscribed. Three
// things keep that from piling up:
//
//   - MessageRetentionPeriod is 60 s, SQS's least: a queue nobody reads
//     holds at most a minute of events.
//   - The owner tags its queue (TailAliveTag, Unix seconds) when it makes
//     it and again every TailConfig.Heartbeat while it keeps it.
//   - When a process makes its tail queue, and every TailConfig.Sweep
//     while it keeps it, it lists the topic's subscriptions and, for every
//     other tail queue of the prefix (exactly the shape tailQueueName
//     makes: isTailQueue), deletes the queue and its subscription when the
//     tag is older than TailConfig.StaleAfter (or missing), and removes a
//     subscription whose queue is gone.
//
// Why a tag and not a time in the name: a live process may tail for days;
// only a heartbeat tells a live queue from a dead one without asking the
// owner. Why the topic's subscriptions and not sqs:ListQueues: the IAM
// Service Authorization Reference gives ListQueues no resource type, so
// it could only be granted on "*", and the subscriptions name every tail queue that matters (one that was
// made and never subscribed gets no events; destroy-world.sh removes it).
//
// What SQS accepts (Amazon SQS API Reference, CreateQueue; moto checks
// none of it): a queue name of up to 80 characters of [A-Za-z0-9_-], a
// FIFO queue's ending in ".fifo" (awssqs.CheckQueueName);
// MessageRetentionPeriod 60-1209600 s; tags on creation need
// sqs:TagQueue besides sqs:CreateQueue. A topic's service principal may
// send to the queue only with a queue policy that allows it (as
// create-world.sh writes for the groups' queues).

// TailAliveTag is the tag of a tail queue holding the Unix seconds of its
// owner's last heartbeat.
const TailAliveTag = "decap-tail-alive"

// tailRetention is a tail queue's MessageRetentionPeriod: SQS's least.
const tailRetention = 60

// Defaults of TailConfig.
const (
	DefaultTailLinger     = time.Minute
	DefaultTailHeartbeat  = 2 * time.Minute
	DefaultTailStaleAfter = 10 * time.Minute
	DefaultTailSweep      = 10 * time.Minute
)

// TailBuffer is how many events a Tail's reader may fall behind before its
// channel is closed.
const TailBuffer = 256

// tailSeen bounds how many builds' last versions a tail queue remembers
// to drop a redelivered event (a delete that failed).
const tailSeen = 10000

// tailSNS is what a tail calls on SNS; *sns.Client implements it.
type tailSNS interface {
	Subscribe(ctx context.Context, in *sns.SubscribeInput, optFns ...func(*sns.Options)) (*sns.SubscribeOutput, error)
	Unsubscribe(ctx context.Context, in *sns.UnsubscribeInput, optFns ...func(*sns.Options)) (*sns.UnsubscribeOutput, error)
	ListSubscriptionsByTopic(ctx context.Context, in *sns.ListSubscriptionsByTopicInput, optFns ...func(*sns.Options)) (*sns.ListSubscriptionsByTopicOutput, error)
}

// tailSQS is what a tail calls on SQS; *sqs.Client implements it.
type tailSQS interface {
	CreateQueue(ctx context.Context, in *sqs.CreateQueueInput, optFns ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	DeleteQueue(ctx context.Context, in *sqs.DeleteQueueInput, optFns ...func(*sqs.Options)) (*sqs.DeleteQueueOutput, error)
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	TagQueue(ctx context.Context, in *sqs.TagQueueInput, optFns ...func(*sqs.Options)) (*sqs.TagQueueOutput, error)
	ListQueueTags(ctx context.Context, in *sqs.ListQueueTagsInput, optFns ...func(*sqs.Options)) (*sqs.ListQueueTagsOutput, error)
}

// TailConfig gives a Stream its live tail. Zero durations take the
// defaults.
type TailConfig struct {
	SNS tailSNS // *sns.Client
	SQS tailSQS // *sqs.Client
	// TopicARN is the build events' topic (TopicARN): the tail queues
	// are in its account and region.
	TopicARN string
	// Linger is how long the tail queue is kept after the last Tail ended.
	Linger time.Duration
	// Heartbeat is how often the owner tags its queue alive; StaleAfter
	// how old that tag may be before another process deletes the queue;
	// Sweep how often a process with a tail queue looks for stale ones.
	Heartbeat, StaleAfter, Sweep time.Duration
	// Now is the clock of the heartbeats (nil: time.Now).
	Now func() time.Time
}

// TailQueuePrefix returns the start of the names of prefix's tail queues.
func TailQueuePrefix(prefix string) string { return prefix + "-tail-" }

// tailQueueName returns a new tail queue's name: TailQueuePrefix, 16
// random hex digits, ".fifo".
func tailQueueName(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := TailQueuePrefix(prefix) + hex.EncodeToString(b[:]) + ".fifo"
	if err := awssqs.CheckQueueName(name, true); err != nil {
		return "", fmt.Errorf("the tail queue of prefix %q: %w", prefix, err)
	}
	return name, nil
}

// isTailQueue reports whether name is one of prefix's tail queues, as
// tailQueueName makes them (and as ingest's IAM policy names them): the
// sweep touches nothing else, such as a queue of another system's that
// only starts the same.
func isTailQueue(prefix, name string) bool {
	id, ok := strings.CutPrefix(name, TailQueuePrefix(prefix))
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, ".fifo")
	return ok && len(id) == 16 && !strings.ContainsFunc(id, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') })
}

// queueARNOf returns the ARN of queue name in the account and region of
// the topic topicARN.
func queueARNOf(topicARN, name string) (string, error) {
	parts := strings.Split(topicARN, ":")
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sns" {
		return "", fmt.Errorf("%w: %q is no SNS topic ARN", build.ErrInvalid, topicARN)
	}
	return strings.Join([]string{"arn", parts[1], "sqs", parts[3], parts[4], name}, ":"), nil
}

// tailQueuePolicy lets the topic, and nothing else, send to the queue.
func tailQueuePolicy(queueARN, topicARN string) string {
	type statement struct {
		Sid       string
		Effect    string
		Principal map[string]string
		Action    string
		Resource  string
		Condition map[string]map[string]string
	}
	b, _ := json.Marshal(struct {
		Version   string
		Statement []statement
	}{"2012-10-17", []statement{{
		Sid: "BuildEventsTopic", Effect: "Allow", Principal: map[string]string{"Service": "sns.amazonaws.com"},
		Action: "sqs:SendMessage", Resource: queueARN,
		Condition: map[string]map[string]string{"ArnEquals": {"aws:SourceArn": topicARN}},
	}}})
	return string(b)
}

// tailer is a Stream's tail: one queue at a time, shared by its Tails.
type tailer struct {
	s   *Stream
	cfg TailConfig

	mu     sync.Mutex
	run    *tailRun // nil: no queue
	closed bool
}

// tailRun is one tail queue and the Tails reading it.
type tailRun struct {
	queueURL, queueARN, subARN string
	subs                       map[chan build.Event]bool
	linger                     *time.Timer // set while no Tail reads
	stop                       context.CancelFunc
	done                       chan struct{} // closed once the queue is deleted
}

func newTailer(s *Stream, cfg TailConfig) *tailer {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.Linger, DefaultTailLinger}, {&cfg.Heartbeat, DefaultTailHeartbeat}, {&cfg.StaleAfter, DefaultTailStaleAfter}, {&cfg.Sweep, DefaultTailSweep}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &tailer{s: s, cfg: cfg}
}

// Tail returns the events published from now on until ctx ends (then the
// channel is closed), see build.EventStream; a reader TailBuffer events
// behind has its channel closed. Without a TailConfig it returns
// ErrNoTail (ErrUnavailable); when SQS or SNS refuse the tail queue, an
// error wrapping ErrUnavailable.
func (s *Stream) Tail(ctx context.Context) (<-chan build.Event, error) {
	if s.tail == nil {
		return nil, ErrNoTail
	}
	return s.tail.join(ctx)
}

// Close deletes the tail queue, if there is one, and its subscription, and
// ends every Tail. Call it at shutdown.
func (s *Stream) Close() error {
	if s.tail == nil {
		return nil
	}
	s.tail.mu.Lock()
	s.tail.closed = true
	run := s.tail.run
	s.tail.run = nil
	s.tail.mu.Unlock()
	if run != nil {
		run.stop()
		<-run.done
	}
	return nil
}

func (t *tailer) join(ctx context.Context) (<-chan build.Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("%w: the event stream is closed", build.ErrUnavailable)
	}
	if t.run == nil {
		run, err := t.start(ctx)
		if err != nil {
			return nil, err
		}
		t.run = run
	}
	run := t.run
	if run.linger != nil {
		run.linger.Stop()
		run.linger = nil
	}
	c := make(chan build.Event, TailBuffer)
	run.subs[c] = true
	go func() {
		select {
		case <-ctx.Done():
		case <-run.done:
		}
		t.leave(run, c)
	}()
	return c, nil
}

// leave ends one Tail; the last one starts the linger.
func (t *tailer) leave(run *tailRun, c chan build.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !run.subs[c] {
		return // dropped already
	}
	delete(run.subs, c)
	close(c)
	if len(run.subs) == 0 && t.run == run && run.linger == nil {
		run.linger = time.AfterFunc(t.cfg.Linger, func() { t.expire(run) })
	}
}

// expire deletes run's queue if no Tail came back meanwhile.
func (t *tailer) expire(run *tailRun) {
	t.mu.Lock()
	if t.run != run || len(run.subs) > 0 {
		t.mu.Unlock()
		return
	}
	t.run = nil
	t.mu.Unlock()
	run.stop()
}

// start makes a tail queue, subscribes it and starts reading it. t.mu is
// held.
func (t *tailer) start(ctx context.Context) (*tailRun, error) {
	name, err := tailQueueName(t.s.prefix)
	if err != nil {
		return nil, err
	}
	arn, err := queueARNOf(t.cfg.TopicARN, name)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	q, err := t.cfg.SQS.CreateQueue(cctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{
		"FifoQueue": "true", "ContentBasedDeduplication": "false", "VisibilityTimeout": strconv.Itoa(int(visibility / time.Second)),
		"MessageRetentionPeriod": strconv.Itoa(tailRetention), "SqsManagedSseEnabled": "true",
		"Policy": tailQueuePolicy(arn, t.cfg.TopicARN),
	}, Tags: map[string]string{TailAliveTag: strconv.FormatInt(t.cfg.Now().Unix(), 10)}})
	if err != nil {
		return nil, fmt.Errorf("make the tail queue %s: %w", name, unavailable(err))
	}
	url := aws.ToString(q.QueueUrl)
	sub, err := t.cfg.SNS.Subscribe(cctx, &sns.SubscribeInput{TopicArn: aws.String(t.cfg.TopicARN), Protocol: aws.String("sqs"),
		Endpoint: aws.String(arn), Attributes: map[string]string{"RawMessageDelivery": "true"}, ReturnSubscriptionArn: true})
	if err != nil {
		t.deleteQueue(url, name)
		return nil, fmt.Errorf("subscribe the tail queue %s to %s: %w", name, t.cfg.TopicARN, unavailable(err))
	}
	rctx, stop := context.WithCancel(context.Background())
	run := &tailRun{queueURL: url, queueARN: arn, subARN: aws.ToString(sub.SubscriptionArn),
		subs: map[chan build.Event]bool{}, stop: stop, done: make(chan struct{})}
	t.s.log.Info("tailing the build events", "queue", name)
	go t.read(rctx, run)
	return run, nil
}

// read receives run's queue until ctx ends, then unsubscribes and deletes
// it. A queue that is gone (another process took it for stale) ends every
// Tail: their readers reconnect and get a new queue.
func (t *tailer) read(ctx context.Context, run *tailRun) {
	defer close(run.done)
	defer t.remove(run)
	seen := map[build.ID]int{}
	beat, sweep := time.Now(), time.Time{}
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		if time.Since(sweep) >= t.cfg.Sweep {
			t.sweep(ctx, run.queueARN)
			sweep = time.Now()
		}
		if time.Since(beat) >= t.cfg.Heartbeat {
			t.heartbeat(ctx, run.queueURL)
			beat = time.Now()
		}
		ans, err := t.cfg.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(run.queueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: int32(t.s.opts.ReceiveWait / time.Second),
			VisibilityTimeout: int32(visibility / time.Second),
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var gone *types.QueueDoesNotExist
			if errors.As(err, &gone) {
				t.s.log.Warn("the tail queue is gone: its Tails end and reconnect", "queue_url", run.queueURL)
				t.drop(run)
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), time.Minute)
			t.s.log.Warn("receive the build events' tail", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if len(ans.Messages) == 0 {
			continue
		}
		var evs []build.Event
		entries := make([]types.DeleteMessageBatchRequestEntry, 0, len(ans.Messages))
		for i, m := range ans.Messages {
			entries = append(entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
			e, err := build.DecodeEvent([]byte(aws.ToString(m.Body)))
			if err != nil {
				t.s.log.Warn("leave out a message of the tail queue that is no build event", "message_id", aws.ToString(m.MessageId), "err", err)
				continue
			}
			if last, ok := seen[e.Subject]; ok && e.Version <= last {
				continue // again (a delete that failed)
			}
			if len(seen) >= tailSeen {
				clear(seen)
			}
			seen[e.Subject] = e.Version
			evs = append(evs, e)
		}
		t.fanOut(run, evs)
		// Deleted before the next receive: a build's next events come only
		// once these are gone (FIFO), and a failed delete brings them
		// again, which seen drops.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		out, err := t.cfg.SQS.DeleteMessageBatch(dctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(run.queueURL), Entries: entries})
		cancel()
		if err == nil && len(out.Failed) > 0 {
			err = fmt.Errorf("%d of %d failed: %s", len(out.Failed), len(entries), aws.ToString(out.Failed[0].Message))
		}
		if err != nil {
			t.s.log.Warn("delete events the tail handed out", "err", err)
		}
	}
}

// fanOut hands evs to every Tail of run; one whose buffer is full is
// closed (it fell behind).
func (t *tailer) fanOut(run *tailRun, evs []build.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range evs {
		for c := range run.subs {
			select {
			case c <- e:
			default:
				delete(run.subs, c)
				close(c)
			}
		}
	}
}

// drop ends every Tail of run and forgets it.
func (t *tailer) drop(run *tailRun) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.run == run {
		t.run = nil
	}
	if run.linger != nil {
		run.linger.Stop()
	}
	for c := range run.subs {
		delete(run.subs, c)
		close(c)
	}
}

// remove unsubscribes and deletes run's queue, after ending its Tails.
func (t *tailer) remove(run *tailRun) {
	t.drop(run)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := t.cfg.SNS.Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: aws.String(run.subARN)}); err != nil {
		t.s.log.Warn("unsubscribe the tail queue (a later sweep removes it)", "subscription", run.subARN, "err", err)
	}
	t.deleteQueue(run.queueURL, run.queueARN)
}

func (t *tailer) deleteQueue(url, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := t.cfg.SQS.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
		var gone *types.QueueDoesNotExist
		if !errors.As(err, &gone) {
			t.s.log.Warn("delete the tail queue (a later sweep removes it)", "queue", name, "err", err)
		}
	}
}

// heartbeat tags the queue alive now.
func (t *tailer) heartbeat(ctx context.Context, url string) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := t.cfg.SQS.TagQueue(cctx, &sqs.TagQueueInput{QueueUrl: aws.String(url),
		Tags: map[string]string{TailAliveTag: strconv.FormatInt(t.cfg.Now().Unix(), 10)}}); err != nil && ctx.Err() == nil {
		t.s.log.Warn("tag the tail queue alive", "err", err)
	}
}

// sweep removes the tail queues of the prefix other than own whose owner
// has not tagged them alive for StaleAfter, and the subscriptions of tail
// queues that are gone (see the top of this file).
func (t *tailer) sweep(ctx context.Context, own string) {
	arnPrefix, err := queueARNOf(t.cfg.TopicARN, TailQueuePrefix(t.s.prefix))
	if err != nil {
		return
	}
	var token *string
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		out, err := t.cfg.SNS.ListSubscriptionsByTopic(cctx, &sns.ListSubscriptionsByTopicInput{TopicArn: aws.String(t.cfg.TopicARN), NextToken: token})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				t.s.log.Warn("list the topic's subscriptions for stale tail queues", "err", err)
			}
			return
		}
		for _, sub := range out.Subscriptions {
			endpoint := aws.ToString(sub.Endpoint)
			if aws.ToString(sub.Protocol) != "sqs" || endpoint == own || !strings.HasPrefix(endpoint, arnPrefix) {
				continue
			}
			t.sweepOne(ctx, endpoint[strings.LastIndex(endpoint, ":")+1:], aws.ToString(sub.SubscriptionArn))
		}
		if token = out.NextToken; token == nil || *token == "" {
			return
		}
	}
}

// sweepOne removes tail queue name and its subscription sub if the queue's
// owner is gone.
func (t *tailer) sweepOne(ctx context.Context, name, sub string) {
	if !isTailQueue(t.s.prefix, name) {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	url := ""
	q, err := t.cfg.SQS.GetQueueUrl(cctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	var gone *types.QueueDoesNotExist
	switch {
	case errors.As(err, &gone):
	case err != nil:
		t.s.log.Warn("look at a tail queue", "queue", name, "err", err)
		return
	default:
		url = aws.ToString(q.QueueUrl)
		tags, err := t.cfg.SQS.ListQueueTags(cctx, &sqs.ListQueueTagsInput{QueueUrl: q.QueueUrl})
		if err != nil {
			t.s.log.Warn("read a tail queue's heartbeat", "queue", name, "err", err)
			return
		}
		if alive, err := strconv.ParseInt(tags.Tags[TailAliveTag], 10, 64); err == nil && t.cfg.Now().Sub(time.Unix(alive, 0)) < t.cfg.StaleAfter {
			return // its owner is alive
		}
	}
	if _, err := t.cfg.SNS.Unsubscribe(cctx, &sns.UnsubscribeInput{SubscriptionArn: aws.String(sub)}); err != nil {
		t.s.log.Warn("unsubscribe a stale tail queue", "queue", name, "err", err)
		return
	}
	if url != "" {
		t.deleteQueue(url, name)
	}
	t.s.log.Info("removed a stale tail queue", "queue", name, "queue_existed", url != "")
}
