package awssqs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/decap-ci/decap/internal/build"
)

// These tests need no SQS: stubClient answers the few calls they make.

type stubClient struct {
	api // nil: other calls panic

	mu        sync.Mutex
	batches   [][]types.SendMessageBatchRequestEntry
	failBody  string // entries whose body contains this fail
	release   chan struct{}
	visTimes  []int32
	waitTimes []int32
	visErr    error
}

func (c *stubClient) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	c.mu.Lock()
	c.batches = append(c.batches, in.Entries)
	release := c.release
	c.mu.Unlock()
	if release != nil {
		<-release
	}
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		if c.failBody != "" && strings.Contains(aws.ToString(e.MessageBody), c.failBody) {
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{
				Id: e.Id, Code: aws.String("InternalError"), Message: aws.String("try again"), SenderFault: false,
			})
			continue
		}
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id, MessageId: aws.String("m-" + aws.ToString(e.Id))})
	}
	return out, nil
}

func (c *stubClient) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.visTimes = append(c.visTimes, in.VisibilityTimeout)
	return &sqs.ChangeMessageVisibilityOutput{}, c.visErr
}

func (c *stubClient) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitTimes = append(c.waitTimes, in.WaitTimeSeconds)
	return &sqs.ReceiveMessageOutput{Messages: []types.Message{{
		MessageId: aws.String("id-1"), ReceiptHandle: aws.String("r-1"), Body: aws.String("{}"),
		Attributes: map[string]string{"MessageGroupId": "a/b/c", "ApproximateReceiveCount": "3", "SentTimestamp": "1764212645600"},
	}}}, nil
}

// newStubQueue returns a queue on the stub client c.
func newStubQueue(t *testing.T, c api) *Queue {
	t.Helper()
	q, err := New(c, Config{QueueURL: "https://sqs.example/q.fifo", DLQURL: "https://sqs.example/dlq.fifo"})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func testRequest(ref string) build.Request {
	now := time.Date(2026, 11, 27, 3, 4, 5, 0, time.UTC)
	return build.Request{
		V: build.MessageVersion, BuildID: build.NewID(now), Team: "ae6rt", Project: "p",
		Ref: ref, RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now,
	}
}

func TestNewRequiresURLs(t *testing.T) {
	t.Parallel()
	if _, err := New(&stubClient{}, Config{QueueURL: "q"}); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("New() without DLQ URL error = %v, want ErrInvalid", err)
	}
}

func TestPublishNeedsDedupID(t *testing.T) {
	t.Parallel()
	c := &stubClient{}
	q := newStubQueue(t, c)
	r := testRequest("main")
	r.BuildID = ""
	if err := q.Publish(t.Context(), testRequest("ok"), r); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Publish() without delivery or build id error = %v, want ErrInvalid", err)
	}
	if len(c.batches) != 0 {
		t.Errorf("Publish() sent %d batches, want none", len(c.batches))
	}
}

// While one batch is in flight, later calls wait and share the next batch;
// a failed entry fails exactly the call that owns it.
func TestPublishBatchesWhileInFlight(t *testing.T) {
	t.Parallel()
	c := &stubClient{release: make(chan struct{}), failBody: `"ref":"bad"`}
	q := newStubQueue(t, c)
	ctx := t.Context()

	first := make(chan error, 1)
	go func() { first <- q.Publish(ctx, testRequest("first")) }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.batches) == 1 })

	refs := []string{"a", "b", "bad", "c", "d"}
	results := make([]chan error, len(refs))
	for i, ref := range refs {
		results[i] = make(chan error, 1)
		go func() { results[i] <- q.Publish(ctx, testRequest(ref)) }()
	}
	waitFor(t, func() bool {
		q.sends.mu.Lock()
		defer q.sends.mu.Unlock()
		return q.sends.queued == len(refs)
	})
	close(c.release)
	if err := <-first; err != nil {
		t.Errorf("first Publish() error = %v", err)
	}
	for i, ref := range refs {
		err := <-results[i]
		if ref == "bad" {
			if !errors.Is(err, build.ErrUnavailable) || !strings.Contains(err.Error(), "ae6rt/p/bad") {
				t.Errorf("Publish(%s) error = %v, want ErrUnavailable naming its lock key", ref, err)
			}
		} else if err != nil {
			t.Errorf("Publish(%s) error = %v, want nil", ref, err)
		}
	}
	if len(c.batches) != 2 || len(c.batches[1]) != len(refs) {
		t.Fatalf("batches of %v entries, want 1 then %d", batchSizes(c.batches), len(refs))
	}
	for _, e := range c.batches[1] {
		ref := aws.ToString(e.MessageAttributes["ref"].StringValue)
		if aws.ToString(e.MessageGroupId) != "ae6rt/p/"+ref || aws.ToString(e.MessageDeduplicationId) == "" {
			t.Errorf("entry: group %q, dedup id %q, ref attribute %q", aws.ToString(e.MessageGroupId), aws.ToString(e.MessageDeduplicationId), ref)
		}
	}
}

// A call of more requests than one batch holds goes out in parts, in order.
func TestPublishSplitsLongCalls(t *testing.T) {
	t.Parallel()
	c := &stubClient{}
	q := newStubQueue(t, c)
	var reqs []build.Request
	for i := range 23 {
		reqs = append(reqs, testRequest(fmt.Sprintf("r%02d", i)))
	}
	if err := q.Publish(t.Context(), reqs...); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
	if got := batchSizes(c.batches); fmt.Sprint(got) != "[10 10 3]" {
		t.Fatalf("batch sizes = %v, want [10 10 3]", got)
	}
	i := 0
	for _, b := range c.batches {
		for _, e := range b {
			if want := fmt.Sprintf(`"ref":"r%02d"`, i); !strings.Contains(aws.ToString(e.MessageBody), want) {
				t.Fatalf("entry %d body %s, want %s", i, aws.ToString(e.MessageBody), want)
			}
			i++
		}
	}
}

func TestPublishContextEnds(t *testing.T) {
	t.Parallel()
	c := &stubClient{release: make(chan struct{})}
	defer close(c.release)
	q := newStubQueue(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := q.Publish(ctx, testRequest("main")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish() error = %v, want context.DeadlineExceeded", err)
	}
}

func TestChangeVisibilityRounding(t *testing.T) {
	t.Parallel()
	c := &stubClient{}
	q := newStubQueue(t, c)
	for _, d := range []time.Duration{0, time.Millisecond, 1500 * time.Millisecond, 2 * time.Second, 13 * time.Hour} {
		if err := q.ChangeVisibility(t.Context(), "r", d); err != nil {
			t.Fatalf("ChangeVisibility(%v) error = %v", d, err)
		}
	}
	if got := fmt.Sprint(c.visTimes); got != "[0 1 2 2 43200]" {
		t.Errorf("VisibilityTimeout sent = %s, want [0 1 2 2 43200]", got)
	}
	if err := q.ChangeVisibility(t.Context(), "r", -time.Second); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("ChangeVisibility(-1s) error = %v, want ErrInvalid", err)
	}
	c.visErr = &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."}
	if err := q.ChangeVisibility(t.Context(), "r", time.Second); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("ChangeVisibility(expired receipt) error = %v, want ErrNotFound", err)
	}
	c.visErr = &smithy.GenericAPIError{Code: "MessageNotInflight", Message: "not in flight"}
	if err := q.ChangeVisibility(t.Context(), "r", time.Second); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("ChangeVisibility(not in flight) error = %v, want ErrNotFound", err)
	}
}

func TestReceiveMapsMessages(t *testing.T) {
	t.Parallel()
	c := &stubClient{}
	q := newStubQueue(t, c)
	msgs, err := q.Receive(t.Context(), 99, 1200*time.Millisecond)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %v, %v", msgs, err)
	}
	want := build.Message{ID: "id-1", Receipt: "r-1", GroupID: "a/b/c", Body: []byte("{}"), ReceiveCount: 3,
		SentAt: time.Date(2025, 11, 27, 3, 4, 5, 600_000_000, time.UTC)}
	if got := msgs[0]; got.ID != want.ID || got.Receipt != want.Receipt || got.GroupID != want.GroupID ||
		string(got.Body) != string(want.Body) || got.ReceiveCount != want.ReceiveCount || !got.SentAt.Equal(want.SentAt) {
		t.Errorf("Receive() = %+v, want %+v", got, want)
	}
	if got := fmt.Sprint(c.waitTimes); got != "[2]" {
		t.Errorf("WaitTimeSeconds sent = %s, want [2] (1.2s rounded up)", got)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"invalid receipt", &types.ReceiptHandleIsInvalid{Message: aws.String("bad")}, build.ErrNotFound},
		{"expired receipt", &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."}, build.ErrNotFound},
		{"visibility past 12 hours", &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value 43200 for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]"}, build.ErrInvalid},
		{"throttled", &smithy.GenericAPIError{Code: "RequestThrottled"}, build.ErrUnavailable},
		{"unreachable", &smithyhttp.RequestSendError{Err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused")}, build.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := classify(tt.err); !errors.Is(got, tt.want) {
				t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	if got := entryError("ReceiptHandleIsInvalid", "The receipt handle has expired", true); !errors.Is(got, build.ErrNotFound) {
		t.Errorf("entryError(expired) = %v, want ErrNotFound", got)
	}
}

func TestAttrText(t *testing.T) {
	t.Parallel()
	long := "reason: " + strings.Repeat("ü", 1000) + "\x00\xff\x7f"
	got := attrText(long, maxReasonLen)
	if len(got) > maxReasonLen || !utf8.ValidString(got) || strings.ContainsRune(got, 0) || !strings.HasSuffix(got, "…") {
		t.Errorf("attrText(long) = %d bytes %q", len(got), got[len(got)-10:])
	}
	if got := attrText("a\x00b\tc", 100); got != "a?b\tc" {
		t.Errorf("attrText = %q, want %q", got, "a?b\tc")
	}
	if got := attrText("", 100); got != "-" {
		t.Errorf("attrText(\"\") = %q, want %q", got, "-")
	}
}

func batchSizes(batches [][]types.SendMessageBatchRequestEntry) []int {
	var n []int
	for _, b := range batches {
		n = append(n, len(b))
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// attemptClient answers ReceiveMessage with one message and records each
// call's ReceiveRequestAttemptId; the first refuse calls get SQS's error
// for an attempt ID it no longer takes.
type attemptClient struct {
	api
	mu     sync.Mutex
	ids    []string
	refuse int
}

func (c *attemptClient) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, aws.ToString(in.ReceiveRequestAttemptId))
	if len(c.ids) <= c.refuse {
		return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value " + aws.ToString(in.ReceiveRequestAttemptId) +
			" for parameter ReceiveRequestAttemptId is invalid. Reason: The receiveRequestAttemptId is not valid anymore since the receive call is not retryable."}
	}
	return &sqs.ReceiveMessageOutput{Messages: []types.Message{{MessageId: aws.String("id-1"), ReceiptHandle: aws.String("r-1"), Body: aws.String("{}")}}}, nil
}

// TestReceiveAttemptIDs: every ReceiveMessage call carries an attempt ID
// SQS accepts (at most 128 letters, digits and punctuation), a new one
// for each call; an ID SQS refuses as no longer retryable is replaced by
// a fresh one at once, once, and the receive answers.
func TestReceiveAttemptIDs(t *testing.T) {
	t.Parallel()
	c := &attemptClient{}
	q := newStubQueue(t, c)
	for range 3 {
		if msgs, err := q.Receive(t.Context(), 10, 0); err != nil || len(msgs) != 1 {
			t.Fatalf("Receive() = %v, %v", msgs, err)
		}
	}
	c.refuse = 4 // the next call's first try
	if msgs, err := q.Receive(t.Context(), 10, 0); err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() after a refused attempt ID = %v, %v; want the message", msgs, err)
	}
	seen := map[string]bool{}
	for _, id := range c.ids {
		if !validID(id) || seen[id] {
			t.Errorf("attempt IDs sent %q: %q invalid or sent twice", c.ids, id)
		}
		seen[id] = true
	}
	if len(c.ids) != 5 {
		t.Errorf("%d ReceiveMessage calls, want 5 (the refused one asked again once)", len(c.ids))
	}
	c.refuse = 7 // both tries of the next call
	if _, err := q.Receive(t.Context(), 10, 0); err == nil {
		t.Errorf("Receive() with every attempt ID refused: no error")
	}
	if len(c.ids) != 7 {
		t.Errorf("%d ReceiveMessage calls, want 7 (one fresh ID per refusal, no more)", len(c.ids))
	}
}

// TestReceiveRetryKeepsAttemptID runs the SDK's own client against a
// server whose first answer to ReceiveMessage is lost to a 500: the SDK's
// retry must send the same attempt ID, so that SQS answers it with the
// same messages instead of leaving them in flight until the visibility
// timeout.
func TestReceiveRetryKeepsAttemptID(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var ids []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ ReceiveRequestAttemptId string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		ids = append(ids, in.ReceiveRequestAttemptId)
		n := len(ids)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"__type":"com.amazonaws.sqs#InternalError","message":"answer lost"}`)
			return
		}
		io.WriteString(w, `{"Messages":[{"MessageId":"id-1","ReceiptHandle":"r-1","Body":"{}"}]}`)
	}))
	t.Cleanup(srv.Close)
	client := sqs.New(sqs.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), HTTPClient: srv.Client(),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		Retryer:     retry.AddWithMaxBackoffDelay(retry.NewStandard(), time.Millisecond),
	})
	q, err := New(client, Config{QueueURL: srv.URL + "/123456789012/q.fifo", DLQURL: srv.URL + "/123456789012/dlq.fifo"})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := q.Receive(t.Context(), 10, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %v, %v; want the message of the retry", msgs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Errorf("attempt IDs of the call and its retry = %q, want one ID twice", ids)
	}
}
