package awssqs_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// The tests below need SQS: moto_server at AWS_ENDPOINT_URL, with static
// credentials test/test in us-east-1. Each test makes its own queues.

// visibility is the visibility timeout of the test queues: short, so the
// real-time contract suite waits seconds, not minutes.
const visibility = buildtest.RealTimeVisibilityTimeout

func sqsClient(t *testing.T) *sqs.Client {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (make test does) to run the SQS adapter tests")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
	if err != nil {
		t.Fatalf("LoadDefaultConfig() error = %v", err)
	}
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// queues is a FIFO build queue and its FIFO dead-letter queue, made for one
// test and deleted after it.
type queues struct {
	prefix, url, dlqURL string
}

func newQueues(t *testing.T, client *sqs.Client, maxReceiveCount int) queues {
	t.Helper()
	ctx := t.Context()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "decap-test-" + hex.EncodeToString(b[:])
	create := func(name string, attrs map[string]string) string {
		t.Helper()
		attrs["FifoQueue"] = "true"
		out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
		if err != nil {
			t.Fatalf("CreateQueue(%s) error = %v", name, err)
		}
		url := aws.ToString(out.QueueUrl)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
				t.Errorf("DeleteQueue(%s) error = %v", name, err)
			}
		})
		return url
	}
	dlq := create(prefix+awssqs.DLQSuffix, map[string]string{})
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(dlq),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatalf("GetQueueAttributes(dlq) error = %v", err)
	}
	policy, _ := json.Marshal(map[string]string{
		"deadLetterTargetArn": attrs.Attributes[string(types.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     fmt.Sprint(maxReceiveCount),
	})
	url := create(prefix+awssqs.QueueSuffix, map[string]string{
		"VisibilityTimeout": fmt.Sprint(int(visibility / time.Second)),
		"RedrivePolicy":     string(policy),
	})
	return queues{prefix: prefix, url: url, dlqURL: dlq}
}

// newQueue returns an adapter on fresh queues. WaitTime is 1s: moto decides
// which message groups are blocked when a long poll starts and does not look
// again until it ends, so shorter polls see a group released meanwhile.
func newQueue(t *testing.T, client *sqs.Client, qs queues, batchWindow time.Duration) *awssqs.Queue {
	t.Helper()
	q, err := awssqs.New(client, awssqs.Config{
		QueueURL:          qs.url,
		DLQURL:            qs.dlqURL,
		VisibilityTimeout: visibility,
		WaitTime:          time.Second,
		BatchWindow:       batchWindow,
	})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return q
}

func TestQueue(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	buildtest.TestQueueWith(t, func(t *testing.T, _ *buildtest.Clock) buildtest.Queue {
		return newQueue(t, client, newQueues(t, client, buildtest.SuiteRedriveLimit), 0)
	}, buildtest.QueueSuiteOptions{
		RealTime:          true,
		VisibilityTimeout: visibility,
		LenientReceipts:   true, // moto accepts every receipt a message ever had
	})
}

// TestDepthLeavesTheDeadLetterQueueOut: Depth counts the queue as Stats
// does, with one GetQueueAttributes, and says it left the dead-letter
// queue unread (build.NotCounted).
func TestDepthLeavesTheDeadLetterQueueOut(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	q := newQueue(t, client, newQueues(t, client, 10), 0)
	now := time.Now().UTC()
	for _, ref := range []string{"a", "b"} {
		req := build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "t", Project: "p", Ref: ref,
			RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: now}
		if err := q.Publish(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	depth, err := q.Depth(t.Context())
	if err != nil || depth.Visible != 2 || depth.DeadLettered != build.NotCounted {
		t.Errorf("Depth() = %+v, %v; want 2 visible, dead letters not counted", depth, err)
	}
	stats, err := q.Stats(t.Context())
	if err != nil || stats.Visible != 2 || stats.DeadLettered != 0 {
		t.Errorf("Stats() = %+v, %v; want 2 visible, 0 dead letters", stats, err)
	}
}

func TestResolveURLs(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	url, dlq, err := awssqs.ResolveURLs(t.Context(), client, qs.prefix)
	if err != nil {
		t.Fatalf("ResolveURLs() error = %v", err)
	}
	if url != qs.url || dlq != qs.dlqURL {
		t.Errorf("ResolveURLs() = %q, %q; want %q, %q", url, dlq, qs.url, qs.dlqURL)
	}
	if _, _, err := awssqs.ResolveURLs(t.Context(), client, qs.prefix+"-missing"); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("ResolveURLs(missing) error = %v, want ErrNotFound", err)
	}
}

// A producer other than ingest sends without buildId and with fields of its
// own; the message is received and decodes.
func TestMessageFromAnotherProducer(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	q := newQueue(t, client, qs, 0)
	body := `{"v":1,"team":"ae6rt","project":"dynamodb-lab","ref":"release/1.2","refType":"tag","trigger":"api",` +
		`"requestedAt":"2026-11-27T03:04:05Z","requestedBy":"jenkins-bridge","priority":7,"labels":{"x":"y"}}`
	if _, err := client.SendMessage(t.Context(), &sqs.SendMessageInput{
		QueueUrl:               aws.String(qs.url),
		MessageBody:            aws.String(body),
		MessageGroupId:         aws.String("ae6rt/dynamodb-lab/release/1.2"),
		MessageDeduplicationId: aws.String("jenkins-42"),
	}); err != nil {
		t.Fatalf("SendMessage() error = %v", err)
	}
	msgs, err := q.Receive(t.Context(), 10, 2*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %d messages, error %v; want 1", len(msgs), err)
	}
	m := msgs[0]
	if m.GroupID != "ae6rt/dynamodb-lab/release/1.2" || m.ReceiveCount != 1 || m.ID == "" || m.SentAt.IsZero() {
		t.Errorf("Receive() = group %q, count %d, id %q, sent %v; want the sent group, count 1, an ID and a time", m.GroupID, m.ReceiveCount, m.ID, m.SentAt)
	}
	req, err := build.Decode(m.Body)
	if err != nil {
		t.Fatalf("Decode() error = %v", err)
	}
	want := build.Request{
		V: 1, Team: "ae6rt", Project: "dynamodb-lab", Ref: "release/1.2", RefType: build.Tag,
		Trigger: build.TriggerAPI, RequestedBy: "jenkins-bridge",
		RequestedAt: time.Date(2026, 11, 27, 3, 4, 5, 0, time.UTC),
	}
	if diff := cmp.Diff(want, req); diff != "" {
		t.Errorf("decoded request (-want +got):\n%s", diff)
	}
	if err := q.Delete(t.Context(), m.Receipt); err != nil {
		t.Errorf("Delete() error = %v", err)
	}
}

// Publish sets the attributes the AWS console shows.
func TestPublishAttributes(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	q := newQueue(t, client, qs, 0)
	r := request(time.Now(), "feature/Locks")
	r.DeliveryID = "9d3a4b10-5c4e-11ef-8a7e-1b2c3d4e5f60"
	if err := q.Publish(t.Context(), r); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
	out, err := client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{
		QueueUrl:              aws.String(qs.url),
		MessageAttributeNames: []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameMessageGroupId,
			types.MessageSystemAttributeNameMessageDeduplicationId,
		},
	})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("ReceiveMessage() = %+v, error %v; want 1 message", out, err)
	}
	m := out.Messages[0]
	got := map[string]string{}
	for k, v := range m.MessageAttributes {
		got[k] = aws.ToString(v.DataType) + ":" + aws.ToString(v.StringValue)
	}
	want := map[string]string{"team": "String:ae6rt", "project": "String:dynamodb-lab", "ref": "String:feature/Locks", "trigger": "String:push"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("message attributes (-want +got):\n%s", diff)
	}
	if g, d := m.Attributes["MessageGroupId"], m.Attributes["MessageDeduplicationId"]; g != r.LockKey() || d != r.DeliveryID {
		t.Errorf("group %q, dedup id %q; want %q, %q", g, d, r.LockKey(), r.DeliveryID)
	}
	body, _ := build.Encode(r)
	if aws.ToString(m.Body) != string(body) {
		t.Errorf("body = %s, want %s", aws.ToString(m.Body), body)
	}
}

// DeadLetter copies the message to the dead-letter queue with the reason
// attached and removes it from the queue.
func TestDeadLetterReason(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	q := newQueue(t, client, qs, 0)
	ctx := t.Context()
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:               aws.String(qs.url),
		MessageBody:            aws.String("not json"),
		MessageGroupId:         aws.String("ae6rt/p/main"),
		MessageDeduplicationId: aws.String("garbage-1"),
	}); err != nil {
		t.Fatalf("SendMessage() error = %v", err)
	}
	msgs, err := q.Receive(ctx, 10, 2*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %d messages, error %v; want 1", len(msgs), err)
	}
	_, derr := build.Decode(msgs[0].Body)
	if derr == nil {
		t.Fatalf("Decode(%q) succeeded", msgs[0].Body)
	}
	reason := "malformed build request: " + derr.Error() + " \x00\x01 " + strings.Repeat("ü", 2000)
	if err := q.DeadLetter(ctx, msgs[0], reason); err != nil {
		t.Fatalf("DeadLetter() error = %v", err)
	}

	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(qs.dlqURL),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameMessageGroupId},
		WaitTimeSeconds:             2,
	})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("ReceiveMessage(dlq) = %+v, error %v; want 1 message", out, err)
	}
	dead := out.Messages[0]
	if aws.ToString(dead.Body) != "not json" || dead.Attributes["MessageGroupId"] != "ae6rt/p/main" {
		t.Errorf("dead letter body %q, group %q; want the original's", aws.ToString(dead.Body), dead.Attributes["MessageGroupId"])
	}
	gotReason := aws.ToString(dead.MessageAttributes["reason"].StringValue)
	if !strings.HasPrefix(gotReason, "malformed build request: invalid: message is not a JSON request") ||
		len(gotReason) > 1024 || !utf8.ValidString(gotReason) || strings.ContainsRune(gotReason, 0) {
		t.Errorf("reason attribute = %q (%d bytes), want the reason, valid, at most 1024 bytes", gotReason, len(gotReason))
	}
	if got := aws.ToString(dead.MessageAttributes["originalMessageId"].StringValue); got != msgs[0].ID {
		t.Errorf("originalMessageId = %q, want %q", got, msgs[0].ID)
	}
	waitStats(t, q, build.QueueStats{DeadLettered: 1})
	if again, err := q.Receive(ctx, 10, 0); err != nil || len(again) != 0 {
		t.Errorf("Receive() after DeadLetter = %d messages, error %v; want none", len(again), err)
	}
}

// countingClient counts SendMessageBatch calls and slows them down a little,
// as a distant SQS would, so that concurrent calls pile up.
type countingClient struct {
	*sqs.Client
	batches, entries atomic.Int64
}

func (c *countingClient) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	c.batches.Add(1)
	c.entries.Add(int64(len(in.Entries)))
	time.Sleep(20 * time.Millisecond)
	return c.Client.SendMessageBatch(ctx, in, optFns...)
}

// Concurrent Publish calls share SendMessageBatch requests, and each group's
// requests arrive in the order they were published.
func TestPublishBatchesConcurrentCalls(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	counting := &countingClient{Client: client}
	q, err := awssqs.New(counting, awssqs.Config{QueueURL: qs.url, DLQURL: qs.dlqURL, WaitTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const groups, perGroup = 8, 6
	published := make([][]build.ID, groups)
	var wg sync.WaitGroup
	for g := range groups {
		wg.Go(func() {
			// One request per call, in order: the next call starts when
			// the previous one returned.
			for range perGroup {
				r := request(time.Now(), fmt.Sprintf("ref-%d", g))
				if err := q.Publish(t.Context(), r); err != nil {
					t.Errorf("Publish() error = %v", err)
					return
				}
				published[g] = append(published[g], r.BuildID)
			}
		})
	}
	// One call with more requests than a batch holds: sent in parts, in order.
	var long []build.Request
	for range 23 {
		long = append(long, request(time.Now(), "long"))
	}
	wg.Go(func() {
		if err := q.Publish(t.Context(), long...); err != nil {
			t.Errorf("Publish(23 requests) error = %v", err)
		}
	})
	wg.Wait()
	calls, requests := groups*perGroup+1, groups*perGroup+len(long)
	if b, e := counting.batches.Load(), counting.entries.Load(); b >= int64(calls) || e != int64(requests) {
		t.Errorf("%d SendMessageBatch requests with %d entries for %d Publish calls of %d requests; want fewer requests than calls, every entry sent once",
			b, e, calls, requests)
	} else {
		t.Logf("%d SendMessageBatch requests for %d Publish calls of %d requests", b, calls, requests)
	}

	want := map[string][]build.ID{}
	for g, ids := range published {
		want[fmt.Sprintf("ae6rt/dynamodb-lab/ref-%d", g)] = ids
	}
	for _, r := range long {
		want[r.LockKey()] = append(want[r.LockKey()], r.BuildID)
	}
	got := map[string][]build.ID{}
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; n < requests && time.Now().Before(deadline); {
		msgs, err := q.Receive(t.Context(), 10, time.Second)
		if err != nil {
			t.Fatalf("Receive() error = %v", err)
		}
		for _, m := range msgs {
			r, err := build.Decode(m.Body)
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			got[m.GroupID] = append(got[m.GroupID], r.BuildID)
			if err := q.Delete(t.Context(), m.Receipt); err != nil {
				t.Fatalf("Delete() error = %v", err)
			}
			n++
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received per group (-want +got):\n%s", diff)
	}
}

// With a batch window, calls arriving within it share one request even when
// nothing was in flight.
func TestPublishBatchWindow(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	counting := &countingClient{Client: client}
	q, err := awssqs.New(counting, awssqs.Config{QueueURL: qs.url, DLQURL: qs.dlqURL, BatchWindow: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := q.Publish(t.Context(), request(time.Now(), fmt.Sprintf("ref-%d", i))); err != nil {
				t.Errorf("Publish() error = %v", err)
			}
		})
	}
	wg.Wait()
	if b := counting.batches.Load(); b != 1 {
		t.Errorf("%d SendMessageBatch requests for 5 calls within the window, want 1", b)
	}
	waitStats(t, q, build.QueueStats{Visible: 5})
}

func request(now time.Time, ref string) build.Request {
	return build.Request{
		V: build.MessageVersion, BuildID: build.NewID(now), Team: "ae6rt", Project: "dynamodb-lab",
		Ref: ref, RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now.UTC(),
	}
}

// waitStats polls Stats until it reports want (SQS counts are approximate).
func waitStats(t *testing.T, q *awssqs.Queue, want build.QueueStats) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := q.Stats(t.Context())
		if err != nil {
			t.Fatalf("Stats() error = %v", err)
		}
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats() (-want +got):\n%s", diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Receive with no wait is a short poll even when the queue asks for long
// polling by default, as aws-resources/create-world.sh sets it up.
func TestReceiveNoWaitOnLongPollingQueue(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	if _, err := client.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{
		QueueUrl:   aws.String(qs.url),
		Attributes: map[string]string{"ReceiveMessageWaitTimeSeconds": "20"},
	}); err != nil {
		t.Fatalf("SetQueueAttributes() error = %v", err)
	}
	q := newQueue(t, client, qs, 0)
	start := time.Now()
	msgs, err := q.Receive(t.Context(), 10, 0)
	if elapsed := time.Since(start); err != nil || len(msgs) != 0 || elapsed > 2*time.Second {
		t.Errorf("Receive(wait 0) = %d messages, error %v after %v; want none at once", len(msgs), err, elapsed.Round(time.Millisecond))
	}
}

// Lock keys SQS would refuse as group IDs (too long, not ASCII) go through
// SQS and come back: each lock key is one group, its requests in order, and
// the body keeps the ref as it was. moto accepts any group ID, so the rule
// itself is checked in ids_test.go; this is the round trip.
func TestLongAndNonASCIILockKeys(t *testing.T) {
	t.Parallel()
	client := sqsClient(t)
	qs := newQueues(t, client, 10)
	q := newQueue(t, client, qs, 0)
	now := time.Now()
	long := request(now, "dependabot/npm_and_yarn/frontend/packages/web-app/babel/preset-env-and-babel/core-7.26.10")
	long.Team, long.Project = "some-organisation-with-a-long-name", "a-monorepo-with-an-even-longer-descriptive-name"
	umlaut := request(now, "fix/umlaut-ü")
	odd := request(now, "odd/\uffff")
	long2, umlaut2 := long, umlaut
	long2.BuildID, umlaut2.BuildID = build.NewID(now), build.NewID(now)
	published := []build.Request{long, umlaut, odd, long2, umlaut2}
	if err := q.Publish(t.Context(), published...); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
	groups := map[string]string{} // lock key → group ID
	var got []build.ID
	deadline := time.Now().Add(15 * time.Second)
	for len(got) < len(published) && time.Now().Before(deadline) {
		msgs, err := q.Receive(t.Context(), 10, time.Second)
		if err != nil {
			t.Fatalf("Receive() error = %v", err)
		}
		for _, m := range msgs {
			r, err := build.Decode(m.Body)
			if err != nil {
				t.Fatalf("Decode(%q) error = %v", m.Body, err)
			}
			if g, ok := groups[r.LockKey()]; ok && g != m.GroupID {
				t.Errorf("lock key %q came in groups %q and %q, want one", r.LockKey(), g, m.GroupID)
			}
			groups[r.LockKey()] = m.GroupID
			if len(m.GroupID) > 128 || !utf8.ValidString(m.GroupID) || strings.ContainsFunc(m.GroupID, func(c rune) bool { return c <= ' ' || c > '~' }) {
				t.Errorf("group ID %q of %q is not what SQS accepts", m.GroupID, r.LockKey())
			}
			got = append(got, r.BuildID)
			if err := q.Delete(t.Context(), m.Receipt); err != nil {
				t.Errorf("Delete() error = %v", err)
			}
		}
	}
	if len(groups) != 3 {
		t.Errorf("%d lock keys seen (%v), want 3", len(groups), groups)
	}
	if g := groups[umlaut.LockKey()]; !strings.HasPrefix(g, "ae6rt/dynamodb-lab/fix/umlaut-_~") {
		t.Errorf("group of %q = %q, want a readable prefix and a hash", umlaut.LockKey(), g)
	}
	// Within each lock key, publish order.
	order := func(ids []build.ID, a, b build.ID) bool {
		ia, ib := -1, -1
		for i, id := range ids {
			switch id {
			case a:
				ia = i
			case b:
				ib = i
			}
		}
		return ia >= 0 && ia < ib
	}
	if !order(got, long.BuildID, long2.BuildID) || !order(got, umlaut.BuildID, umlaut2.BuildID) {
		t.Errorf("received %v, want %s before %s and %s before %s", got, long.BuildID, long2.BuildID, umlaut.BuildID, umlaut2.BuildID)
	}
}
