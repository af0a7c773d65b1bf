package awsevents_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/decap-ci/decap/internal/awsevents"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
)

// The tests below need SNS and SQS: moto_server at AWS_ENDPOINT_URL, with
// static credentials test/test in us-east-1. Each test makes its own
// topic and queues, as aws-resources/create-world.sh makes them, and
// deletes them after.

func clients(t *testing.T) (*sns.Client, *sqs.Client) {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (make test does) to run the SNS/SQS event stream tests")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
	if err != nil {
		t.Fatal(err)
	}
	return sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// world is a topic and the queues of some consumer groups subscribed to it
// with raw delivery.
type world struct {
	prefix   string
	topicARN string
	sns      *sns.Client
	sqs      *sqs.Client
	queues   map[string]string // URL by group
}

func newWorld(t *testing.T, groups ...string) *world {
	t.Helper()
	snsClient, sqsClient := clients(t)
	ctx := context.Background() // cleanup outlives t.Context()
	w := &world{prefix: fmt.Sprintf("evt-%d", time.Now().UnixNano()), sns: snsClient, sqs: sqsClient, queues: map[string]string{}}
	topic, err := snsClient.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(awsevents.TopicName(w.prefix)),
		Attributes: map[string]string{"FifoTopic": "true", "ContentBasedDeduplication": "false"}})
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	w.topicARN = aws.ToString(topic.TopicArn)
	t.Cleanup(func() { snsClient.DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: topic.TopicArn}) })
	for _, g := range groups {
		w.queues[g] = w.subscribedQueue(t, g)
	}
	return w
}

// subscribedQueue makes the queue of group and subscribes it to the topic.
func (w *world) subscribedQueue(t *testing.T, group string) string {
	t.Helper()
	ctx := context.Background()
	name, err := awsevents.QueueName(w.prefix, group)
	if err != nil {
		t.Fatal(err)
	}
	q, err := w.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{
		"FifoQueue": "true", "ContentBasedDeduplication": "false", "VisibilityTimeout": "30"}})
	if err != nil {
		t.Fatalf("CreateQueue %s: %v", name, err)
	}
	t.Cleanup(func() { w.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl}) })
	attrs, err := w.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := w.sns.Subscribe(ctx, &sns.SubscribeInput{TopicArn: aws.String(w.topicARN), Protocol: aws.String("sqs"),
		Endpoint: aws.String(attrs.Attributes["QueueArn"]), Attributes: map[string]string{"RawMessageDelivery": "true"},
		ReturnSubscriptionArn: true})
	if err != nil {
		t.Fatalf("Subscribe %s: %v", name, err)
	}
	t.Cleanup(func() { w.sns.Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: sub.SubscriptionArn}) })
	return aws.ToString(q.QueueUrl)
}

// stream is the world's event stream, polling for a second (moto's long
// poll waits out a group freed meanwhile: StreamOptions), with its live
// tail; it is closed when t ends.
func (w *world) stream(t *testing.T) *awsevents.Stream {
	return w.tailStream(t, awsevents.TailConfig{})
}

// tailStream is stream with the tail configured as cfg (its clients and
// topic set here).
func (w *world) tailStream(t *testing.T, cfg awsevents.TailConfig) *awsevents.Stream {
	t.Helper()
	cfg.SNS, cfg.SQS, cfg.TopicARN = w.sns, w.sqs, w.topicARN
	s := awsevents.NewStream(w.sqs, w.prefix, awsevents.StreamOptions{ReceiveWait: time.Second, Tail: &cfg})
	t.Cleanup(func() { s.Close() })
	return s
}

// tailQueues returns the names of the world's tail queues that exist.
func (w *world) tailQueues(t *testing.T) []string {
	t.Helper()
	out, err := w.sqs.ListQueues(context.Background(), &sqs.ListQueuesInput{QueueNamePrefix: aws.String(awsevents.TailQueuePrefix(w.prefix))})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range out.QueueUrls {
		names = append(names, u[strings.LastIndex(u, "/")+1:])
	}
	return names
}

// tailSubscriptions returns the endpoints of the topic's subscriptions of
// tail queues.
func (w *world) tailSubscriptions(t *testing.T) []string {
	t.Helper()
	out, err := w.sns.ListSubscriptionsByTopic(context.Background(), &sns.ListSubscriptionsByTopicInput{TopicArn: aws.String(w.topicARN)})
	if err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, s := range out.Subscriptions {
		if ep := aws.ToString(s.Endpoint); strings.Contains(ep, ":"+awsevents.TailQueuePrefix(w.prefix)) {
			eps = append(eps, ep)
		}
	}
	return eps
}

func (w *world) publisher(t *testing.T) *awsevents.Publisher {
	t.Helper()
	p, err := awsevents.NewPublisher(w.sns, w.topicARN)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// receiveAll reads queueURL until n messages came (deleting each) or 30 s
// passed (n 0: for 2 s), and returns their bodies.
func (w *world) receiveAll(t *testing.T, queueURL string, n int) []string {
	t.Helper()
	var bodies []string
	deadline := time.Now().Add(30 * time.Second)
	if n == 0 {
		deadline = time.Now().Add(2 * time.Second)
	}
	for (n == 0 || len(bodies) < n) && time.Now().Before(deadline) {
		out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(queueURL),
			MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			bodies = append(bodies, aws.ToString(m.Body))
			if _, err := w.sqs.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(queueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bodies
}

func eventOf(t *testing.T, r build.Record, version int) (build.Event, *message.Message) {
	t.Helper()
	e := build.NewEvent(r, version, time.Now())
	e.Source = "https://decap.test"
	m, err := events.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

func record(i int) build.Record {
	at := time.Now().Add(time.Duration(i) * time.Millisecond)
	return build.Record{BuildID: build.NewID(at), Team: "ae6rt", Project: "lab", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: at}
}

// A queue subscribed to the topic with raw delivery gets each event as
// published (its body the CloudEvent), every build's in order, and a
// second publish of an event within SNS's deduplication interval not at
// all; an event over SNS's limit comes trimmed, with dataref, and its
// build's next event after it.
func TestPublishReachesSubscribedQueue(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "subscriber")
	p := w.publisher(t)
	a, b := record(0), record(1)
	ea1, ma1 := eventOf(t, a, 1)
	eb1, mb1 := eventOf(t, b, 1)
	a.Status, a.Reason = build.StatusDeferred, strings.Repeat("busy ", 60*1024) // 300 KiB
	ea2, ma2 := eventOf(t, a, 2)
	a.Status, a.Reason, a.StartedAt = build.StatusRunning, "", time.Now()
	ea3, ma3 := eventOf(t, a, 3)
	_, again := eventOf(t, b, 1) // a forwarder that crashed before Forwarded
	if err := p.Publish(awsevents.Topic, ma1, mb1, ma2); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(awsevents.Topic, again, ma3); err != nil {
		t.Fatal(err)
	}
	bodies := w.receiveAll(t, w.queues["subscriber"], 4)
	bodies = append(bodies, w.receiveAll(t, w.queues["subscriber"], 0)...) // a duplicate would come now
	var got []string
	for _, body := range bodies {
		if len(body) > awsevents.MaxMessageBytes {
			t.Errorf("a message of %d bytes reached the queue, over SNS's limit", len(body))
		}
		e, err := build.DecodeEvent([]byte(body))
		if err != nil {
			t.Fatalf("the queue got %.200q, no event: %v", body, err)
		}
		got = append(got, e.ID)
		if e.ID == ea2.ID && (e.Record.Reason != "" || !strings.Contains(body, `"dataref":"https://decap.test/api/v1/builds/`+string(a.BuildID)+`"`)) {
			t.Errorf("the big event came with a %d-byte reason, body %.300s; want it trimmed with dataref", len(e.Record.Reason), body)
		}
	}
	perBuild := func(ids []string, id build.ID) []string {
		var out []string
		for _, s := range ids {
			if strings.HasPrefix(s, string(id)+":") {
				out = append(out, s)
			}
		}
		return out
	}
	if want := []string{ea1.ID, ea2.ID, ea3.ID}; !slices.Equal(perBuild(got, a.BuildID), want) {
		t.Errorf("build a's events: got %v, want %v", perBuild(got, a.BuildID), want)
	}
	if want := []string{eb1.ID}; !slices.Equal(perBuild(got, b.BuildID), want) {
		t.Errorf("build b's events: got %v, want %v (a second publish dropped)", perBuild(got, b.BuildID), want)
	}
}

// The build-event stream contract on SNS and SQS, but for "order and
// dedup": moto does not deduplicate on a FIFO topic, and its FIFO queue
// drops a second message only while the first is still in it, so the
// suite's third publish of an event, after the consumer deleted it, comes
// again on moto (SNS and SQS remember a deduplication ID for 5 minutes).
// TestPublishReachesSubscribedQueue checks order, and deduplication where
// moto does it.
func TestEventStream(t *testing.T) {
	t.Parallel()
	open := func(t *testing.T) (message.Publisher, build.EventStream) {
		w := newWorld(t, "order", "retry", "durable", "webhooks", "commit-statuses", "shared")
		return w.publisher(t), w.stream(t)
	}
	for name, test := range map[string]func(*testing.T, func(*testing.T) (message.Publisher, build.EventStream)){
		"tail":                  buildtest.TestEventStreamTail,
		"tail behind":           buildtest.TestEventStreamTailBehind,
		"handler error":         buildtest.TestEventStreamRetry,
		"durable position":      buildtest.TestEventStreamDurable,
		"groups":                buildtest.TestEventStreamGroups,
		"one group, two takers": buildtest.TestEventStreamSharedGroup,
		"bad input":             buildtest.TestEventStreamBadInput,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, open)
		})
	}
}

// A stream made without a TailConfig (the services that never tail) has
// no tail: ErrUnavailable.
func TestTailWithoutConfig(t *testing.T) {
	t.Parallel()
	s := awsevents.NewStream(nil, "decap", awsevents.StreamOptions{})
	if _, err := s.Tail(t.Context()); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Tail() = %v, want ErrUnavailable", err)
	}
}

// A Tail gets the events published after it started, each build's in
// order, through a queue of its own subscribed to the topic; two Tails of
// one process share that queue; after the last Tail ended and the linger
// passed, the queue and its subscription are gone.
func TestTailQueue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.publisher(t)
	s := w.tailStream(t, awsevents.TailConfig{Linger: time.Second})
	a, b := record(0), record(1)
	_, before := eventOf(t, a, 1)
	if err := p.Publish(awsevents.Topic, before); err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(t.Context())
	tail1, err := s.Tail(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	tail2, err := s.Tail(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	if q := w.tailQueues(t); len(q) != 1 || len(w.tailSubscriptions(t)) != 1 {
		t.Fatalf("two Tails made queues %v, subscriptions %v; want one of each", q, w.tailSubscriptions(t))
	}
	var want []string
	for v := 2; v <= 4; v++ {
		ea, ma := eventOf(t, a, v)
		eb, mb := eventOf(t, b, v-1)
		if err := p.Publish(awsevents.Topic, ma, mb); err != nil {
			t.Fatal(err)
		}
		want = append(want, ea.ID, eb.ID)
	}
	for i, tail := range []<-chan build.Event{tail1, tail2} {
		var got []string
		for len(got) < len(want) {
			select {
			case e, ok := <-tail:
				if !ok {
					t.Fatalf("tail %d closed after %v", i+1, got)
				}
				got = append(got, e.ID)
			case <-time.After(30 * time.Second):
				t.Fatalf("tail %d got %v in 30 s, want %v", i+1, got, want)
			}
		}
		for _, id := range []build.ID{a.BuildID, b.BuildID} {
			if g, w := ofBuild(got, id), ofBuild(want, id); !slices.Equal(g, w) {
				t.Errorf("tail %d: build %s's events %v, want %v (only those after it started, in order)", i+1, id, g, w)
			}
		}
	}
	cancel1()
	cancel2()
	for _, tail := range []<-chan build.Event{tail1, tail2} {
		for range tail { // closed when its context ended
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(w.tailQueues(t)) > 0 || len(w.tailSubscriptions(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the last Tail ended, the tail queues %v and subscriptions %v are left", w.tailQueues(t), w.tailSubscriptions(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A new Tail makes a new queue.
	ctx3, cancel3 := context.WithCancel(t.Context())
	defer cancel3()
	tail3, err := s.Tail(ctx3)
	if err != nil {
		t.Fatal(err)
	}
	ea, ma := eventOf(t, a, 5)
	if err := p.Publish(awsevents.Topic, ma); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-tail3:
		if e.ID != ea.ID {
			t.Errorf("the new tail got %s, want %s", e.ID, ea.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the tail made after the linger got nothing")
	}
}

// Close ends every Tail and deletes the queue and its subscription at
// once.
func TestTailClose(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.tailStream(t, awsevents.TailConfig{Linger: time.Hour})
	tail, err := s.Tail(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(w.tailQueues(t)) != 1 {
		t.Fatalf("tail queues %v, want one", w.tailQueues(t))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-tail:
		if ok {
			t.Error("the tail gave an event after Close")
		}
	case <-time.After(10 * time.Second):
		t.Error("the tail stayed open after Close")
	}
	if q, subs := w.tailQueues(t), w.tailSubscriptions(t); len(q) > 0 || len(subs) > 0 {
		t.Errorf("after Close: tail queues %v, subscriptions %v; want none", q, subs)
	}
	if _, err := s.Tail(t.Context()); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Tail() after Close = %v, want ErrUnavailable", err)
	}
}

// A process killed with its tail queue leaves the queue subscribed; the
// next process that tails removes it once its heartbeat is older than
// StaleAfter, and removes a subscription whose queue is gone, but leaves
// a live process's queue alone.
func TestTailSweepsStaleQueues(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// The dead: a queue tagged alive long ago, and a subscription of a
	// queue that is gone. The living: another process's queue, tagged now.
	dead := w.tailQueue(t, "00000000000000d1", time.Now().Add(-time.Hour))
	gone := w.tailQueue(t, "00000000000000d2", time.Now())
	if _, err := w.sqs.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(gone)}); err != nil {
		t.Fatal(err)
	}
	alive := w.tailQueue(t, "00000000000000a1", time.Now())
	// Another system's queue whose name only starts the same, untagged:
	// no tail queue, left alone.
	other := w.tailQueue(t, "not-a-tail-queue", time.Time{})
	s := w.tailStream(t, awsevents.TailConfig{StaleAfter: 10 * time.Minute})
	if _, err := s.Tail(t.Context()); err != nil {
		t.Fatal(err)
	}
	name := func(u string) string { return u[strings.LastIndex(u, "/")+1:] }
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, subs := w.tailQueues(t), w.tailSubscriptions(t)
		if !slices.Contains(q, name(dead)) && len(subs) == 3 && len(q) == 3 {
			if !slices.Contains(q, name(alive)) || !slices.Contains(q, name(other)) {
				t.Errorf("the sweep removed the live queue %s or another system's %s: queues %v", name(alive), name(other), q)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after a Tail started: tail queues %v, subscriptions %v; want the stale queue %s and the subscription of %s gone, the live one and the Tail's own left",
				q, subs, name(dead), name(gone))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tailQueue makes a tail queue as another process would, tagged alive at
// at (zero: untagged), and subscribes it; it returns its URL.
func (w *world) tailQueue(t *testing.T, id string, at time.Time) string {
	t.Helper()
	ctx := context.Background()
	var tags map[string]string
	if !at.IsZero() {
		tags = map[string]string{awsevents.TailAliveTag: fmt.Sprint(at.Unix())}
	}
	q, err := w.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(awsevents.TailQueuePrefix(w.prefix) + id + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "MessageRetentionPeriod": "60"},
		Tags:       tags})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl}) })
	attrs, err := w.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.sns.Subscribe(ctx, &sns.SubscribeInput{TopicArn: aws.String(w.topicARN), Protocol: aws.String("sqs"),
		Endpoint: aws.String(attrs.Attributes["QueueArn"]), Attributes: map[string]string{"RawMessageDelivery": "true"}}); err != nil {
		t.Fatal(err)
	}
	return aws.ToString(q.QueueUrl)
}

// ofBuild returns the event IDs of build id among ids, in order.
func ofBuild(ids []string, id build.ID) []string {
	var out []string
	for _, s := range ids {
		if strings.HasPrefix(s, string(id)+":") {
			out = append(out, s)
		}
	}
	return out
}

// A group without its queue is ErrNotFound, named.
func TestConsumeWithoutQueue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	err := w.stream(t).Consume(t.Context(), "webhooks", func(context.Context, build.Event) error { return nil })
	if !errors.Is(err, build.ErrNotFound) || !strings.Contains(err.Error(), w.prefix+"-events-webhooks.fifo") {
		t.Errorf("Consume() = %v, want ErrNotFound naming the queue", err)
	}
}

// A tail queue deleted under a running Tail (another process's sweep took
// it for stale) ends its Tails, whose readers reconnect: the next Tail
// makes a new queue and gets the events.
func TestTailQueueGone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.tailStream(t, awsevents.TailConfig{})
	tail, err := s.Tail(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	q := w.tailQueues(t)
	if len(q) != 1 {
		t.Fatalf("tail queues %v, want one", q)
	}
	url, err := w.sqs.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String(q[0])})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.sqs.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: url.QueueUrl}); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-tail:
		if ok {
			t.Fatal("the tail gave an event from a deleted queue")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the tail stayed open 30 s after its queue was deleted")
	}
	again, err := s.Tail(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if now := w.tailQueues(t); len(now) != 1 || now[0] == q[0] {
		t.Errorf("tail queues after the reconnect: %v, want one new (not %s)", now, q[0])
	}
	e, m := eventOf(t, record(0), 1)
	if err := w.publisher(t).Publish(awsevents.Topic, m); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-again:
		if got.ID != e.ID {
			t.Errorf("the new tail got %s, want %s", got.ID, e.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new tail got nothing in 30 s")
	}
}

// A tail whose queue cannot be subscribed (here: the topic is not there)
// fails with ErrUnavailable (ingest answers 503) and leaves no queue.
func TestTailSubscribeFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := awsevents.NewStream(w.sqs, w.prefix, awsevents.StreamOptions{ReceiveWait: time.Second, Tail: &awsevents.TailConfig{
		SNS: w.sns, SQS: w.sqs, TopicARN: w.topicARN + "-missing.fifo"}})
	t.Cleanup(func() { s.Close() })
	if _, err := s.Tail(t.Context()); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Tail() with no topic = %v, want ErrUnavailable", err)
	}
	if q := w.tailQueues(t); len(q) > 0 {
		t.Errorf("a tail that could not subscribe left the queues %v", q)
	}
}
