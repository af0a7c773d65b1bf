package awsevents

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

const testTopicARN = "arn:aws:sns:us-east-1:123456789012:decap-build-events.fifo"

// fakeSNS is a FIFO topic that keeps what it accepts and refuses what SNS
// refuses (package comment): IDs outside the rule, a message over 256 KB,
// a body a subscribed SQS queue could not take. A second publish of a
// deduplication ID is accepted and not kept, as SNS does within 5 minutes.
type fakeSNS struct {
	mu    sync.Mutex
	kept  []*sns.PublishInput
	dedup map[string]bool
	calls int
}

func (f *fakeSNS) Publish(ctx context.Context, in *sns.PublishInput, _ ...func(*sns.Options)) (*sns.PublishOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, id := range []*string{in.MessageGroupId, in.MessageDeduplicationId} {
		if id == nil || !snsAcceptsID(*id) {
			return nil, errors.New("InvalidParameter: MessageGroupId or MessageDeduplicationId")
		}
	}
	if n := messageSize(aws.ToString(in.Message), in.MessageAttributes); n > MaxMessageBytes {
		return nil, errors.New("InvalidParameter: message too long")
	}
	if strings.ContainsAny(aws.ToString(in.Message), "\ufffe\uffff") {
		return nil, errors.New("the subscribed queue refuses the body")
	}
	if len(in.MessageAttributes) > 10 {
		return nil, errors.New("raw delivery to SQS fails over 10 attributes")
	}
	if f.dedup == nil {
		f.dedup = map[string]bool{}
	}
	if !f.dedup[*in.MessageDeduplicationId] {
		f.dedup[*in.MessageDeduplicationId] = true
		f.kept = append(f.kept, in)
	}
	return &sns.PublishOutput{MessageId: aws.String("m")}, nil
}

func testRecord(id build.ID) build.Record {
	return build.Record{BuildID: id, Team: "ae6rt", Project: "lab", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)}
}

func testMessage(t *testing.T, r build.Record, version int) (build.Event, *message.Message) {
	t.Helper()
	e := build.NewEvent(r, version, r.QueuedAt.Add(time.Duration(version)*time.Second))
	e.Source = "https://decap.example.com/"
	m, err := events.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

func newTestPublisher(t *testing.T) (*Publisher, *fakeSNS) {
	t.Helper()
	f := &fakeSNS{}
	p, err := NewPublisher(f, testTopicARN)
	if err != nil {
		t.Fatal(err)
	}
	return p, f
}

// An event goes out as published, its build the group, its ID the
// deduplication ID, its type and subject as attributes.
func TestPublishSendsGroupDedupAndAttributes(t *testing.T) {
	t.Parallel()
	p, f := newTestPublisher(t)
	r := testRecord(build.NewID(time.Now()))
	e, m := testMessage(t, r, 1)
	if err := p.Publish(Topic, m); err != nil {
		t.Fatal(err)
	}
	if len(f.kept) != 1 {
		t.Fatalf("topic kept %d messages, want 1", len(f.kept))
	}
	in := f.kept[0]
	got := map[string]string{
		"topic": aws.ToString(in.TopicArn), "group": aws.ToString(in.MessageGroupId), "dedup": aws.ToString(in.MessageDeduplicationId),
		"body": aws.ToString(in.Message), "type": aws.ToString(in.MessageAttributes[AttributeType].StringValue),
		"subject": aws.ToString(in.MessageAttributes[AttributeSubject].StringValue),
	}
	want := map[string]string{"topic": testTopicARN, "group": string(r.BuildID), "dedup": e.ID, "body": string(m.Payload),
		"type": string(build.EventQueued), "subject": string(r.BuildID)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Publish input (-want +got):\n%s", diff)
	}
	// Published again (a forwarder that crashed before Forwarded): the
	// same deduplication ID, so the topic drops it.
	_, again := testMessage(t, r, 1)
	if err := p.Publish(testTopicARN, again); err != nil {
		t.Fatal(err)
	}
	if len(f.kept) != 1 || f.calls != 2 {
		t.Errorf("after a second publish: %d calls, %d kept; want 2 calls, 1 kept", f.calls, len(f.kept))
	}
}

// IDs SNS refuses are mapped: at most 128 characters of printable ASCII,
// the same ID for the same input, different for different inputs.
func TestFIFOIDs(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 200)
	tests := []struct {
		name, in string
		mapped   bool
	}{
		{"build ID", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", false},
		{"event ID", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b:12", false},
		{"128 characters", strings.Repeat("b", 128), false},
		{"129 characters", strings.Repeat("b", 129), true},
		{"long", long, true},
		{"non-ASCII", "fix/umlaut-ü", true},
		{"space", "a b", true},
		{"control", "a\x00b", true},
		{"empty", "", true},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := awssqs.FIFOID(tt.in)
		if !snsAcceptsID(got) {
			t.Errorf("%s: FIFOID(%q) = %q, which SNS refuses", tt.name, tt.in, got)
		}
		if mapped := got != tt.in; mapped != tt.mapped {
			t.Errorf("%s: FIFOID(%q) = %q, mapped %v, want %v", tt.name, tt.in, got, mapped, tt.mapped)
		}
		if tt.mapped && (len(got) > 128 || !strings.Contains(got, "~")) {
			t.Errorf("%s: mapped ID %q: want at most 128 characters with '~'", tt.name, got)
		}
		if again := awssqs.FIFOID(tt.in); again != got {
			t.Errorf("%s: FIFOID not stable: %q then %q", tt.name, got, again)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("%q and %q map to the same ID %q", other, tt.in, got)
		}
		seen[got] = tt.in
	}
	if awssqs.FIFOID(long) == awssqs.FIFOID(long+"a") {
		t.Error("two long IDs with one prefix map to one ID")
	}
}

// A build ID SNS would refuse as a group (another producer's, not a UUID)
// is sent mapped, not refused.
func TestPublishMapsIDsSNSRefuses(t *testing.T) {
	t.Parallel()
	p, f := newTestPublisher(t)
	_, m := testMessage(t, testRecord(build.ID("build ü "+strings.Repeat("x", 150))), 3)
	if err := p.Publish(Topic, m); err != nil {
		t.Fatalf("Publish() = %v, want the IDs mapped", err)
	}
	if len(f.kept) != 1 {
		t.Fatalf("topic kept %d messages", len(f.kept))
	}
}

// An event over 256 KB goes out trimmed, with dataref, and does not hold
// its build's later events back: the next is published after it.
func TestPublishTrimsAnEventOverTheLimit(t *testing.T) {
	t.Parallel()
	p, f := newTestPublisher(t)
	r := testRecord(build.NewID(time.Now()))
	r.Status, r.Reason = build.StatusDeferred, strings.Repeat("r", 300*1024)
	r.Secrets = []string{"NPM_TOKEN"}
	big, m := testMessage(t, r, 2)
	if len(m.Payload) <= MaxMessageBytes {
		t.Fatalf("test event is %d bytes, want it over %d", len(m.Payload), MaxMessageBytes)
	}
	r2 := r
	r2.Status, r2.Reason = build.StatusRunning, ""
	_, next := testMessage(t, r2, 3)
	if err := p.Publish(Topic, m, next); err != nil {
		t.Fatalf("Publish() = %v, want the big event trimmed and both published", err)
	}
	if len(f.kept) != 2 {
		t.Fatalf("topic kept %d messages, want 2", len(f.kept))
	}
	body := []byte(aws.ToString(f.kept[0].Message))
	if len(body) > MaxMessageBytes {
		t.Errorf("trimmed event is %d bytes", len(body))
	}
	got, err := build.DecodeEvent(body)
	if err != nil {
		t.Fatalf("the trimmed event does not decode: %v", err)
	}
	if got.ID != big.ID || got.Type != big.Type || got.Subject != big.Subject || got.Version != 2 || got.Record.Status != build.StatusDeferred {
		t.Errorf("trimmed event %+v, want ID, type, subject, version and status of %s kept", got, big.ID)
	}
	if got.Record.Reason != "" || got.Record.Secrets != nil {
		t.Errorf("trimmed record kept reason (%d bytes) or secrets %v", len(got.Record.Reason), got.Record.Secrets)
	}
	var ext struct{ DataRef string }
	if err := json.Unmarshal(body, &ext); err != nil {
		t.Fatal(err)
	}
	if want := "https://decap.example.com/api/v1/builds/" + string(r.BuildID); ext.DataRef != want {
		t.Errorf("dataref = %q, want %q", ext.DataRef, want)
	}
	if aws.ToString(f.kept[1].MessageDeduplicationId) != build.EventID(r.BuildID, 3) {
		t.Errorf("second message %s, want the build's next event", aws.ToString(f.kept[1].MessageDeduplicationId))
	}
}

// U+FFFE and U+FFFF, which SQS bodies may not hold, go out as JSON escapes.
func TestPublishEscapesWhatSQSRefuses(t *testing.T) {
	t.Parallel()
	p, f := newTestPublisher(t)
	r := testRecord(build.NewID(time.Now()))
	r.Status, r.Reason = build.StatusDeferred, "odd \ufffe and \uffff"
	e, m := testMessage(t, r, 2)
	if err := p.Publish(Topic, m); err != nil {
		t.Fatal(err)
	}
	got, err := build.DecodeEvent([]byte(aws.ToString(f.kept[0].Message)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Record.Reason != e.Record.Reason {
		t.Errorf("reason came back %q, want %q", got.Record.Reason, e.Record.Reason)
	}
}

// What is no event, or another topic, is refused before any call; a
// cancelled message context stops the call.
func TestPublishRefuses(t *testing.T) {
	t.Parallel()
	p, f := newTestPublisher(t)
	junk := message.NewMessage("junk", []byte(`{"specversion":"1.0","id":"x"}`))
	if err := p.Publish(Topic, junk); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Publish(no event) = %v, want ErrInvalid", err)
	}
	_, m := testMessage(t, testRecord(build.NewID(time.Now())), 1)
	if err := p.Publish("arn:aws:sns:us-east-1:123456789012:other.fifo", m); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Publish(other topic) = %v, want ErrInvalid", err)
	}
	if f.calls != 0 {
		t.Errorf("%d calls to SNS, want none", f.calls)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m.SetContext(ctx)
	if err := p.Publish(Topic, m); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish(cancelled) = %v, want context.Canceled", err)
	}
	for _, arn := range []string{"", "decap-build-events.fifo", "arn:aws:sns:us-east-1:123456789012:standard"} {
		if _, err := NewPublisher(f, arn); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("NewPublisher(%q) = %v, want ErrInvalid", arn, err)
		}
	}
}

func TestQueueName(t *testing.T) {
	t.Parallel()
	if got, err := QueueName("decap", "webhooks"); err != nil || got != "decap-events-webhooks.fifo" {
		t.Errorf("QueueName = %q, %v", got, err)
	}
	// The longest prefix with the groups Decap uses fits SQS's 80.
	prefix := strings.Repeat("p", 40)
	for _, g := range []string{"github-statuses", "webhooks"} {
		if _, err := QueueName(prefix, g); err != nil {
			t.Errorf("QueueName(%s, %s) = %v", prefix, g, err)
		}
	}
	for _, g := range []string{"", "Webhooks", "a/b", strings.Repeat("g", 64)} {
		if _, err := QueueName(prefix, g); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("QueueName(%q) = %v, want ErrInvalid", g, err)
		}
	}
}

// snsAcceptsID is the rule of SNS's Publish for MessageGroupId and
// MessageDeduplicationId: 1 to 128 alphanumeric or punctuation characters.
func snsAcceptsID(s string) bool { return snsIDRule.MatchString(s) }

var snsIDRule = regexp.MustCompile(`^[!-~]{1,128}$`)

// A tail queue's name fits SQS's rule for every prefix the configuration
// allows (3-40 of [a-z0-9-]), and the queue's ARN is the topic's account
// and region.
func TestTailQueueName(t *testing.T) {
	t.Parallel()
	rule := regexp.MustCompile(`^[A-Za-z0-9_-]{1,75}\.fifo$`)
	for _, prefix := range []string{"abc", "decap", strings.Repeat("p", 40)} {
		a, err := tailQueueName(prefix)
		if err != nil {
			t.Fatalf("tailQueueName(%q) = %v", prefix, err)
		}
		b, _ := tailQueueName(prefix)
		if !rule.MatchString(a) || !strings.HasPrefix(a, TailQueuePrefix(prefix)) || a == b {
			t.Errorf("tailQueueName(%q) = %q, %q: want two different names of SQS's rule starting %q", prefix, a, b, TailQueuePrefix(prefix))
		}
	}
	for name, want := range map[string]bool{
		"decap-tail-0123456789abcdef.fifo": true, "decap-tail-0123456789ABCDEF.fifo": false, "decap-tail-0123456789abcde.fifo": false,
		"decap-tail-0123456789abcdef0.fifo": false, "decap-tail-0123456789abcdef": false, "decap-tail-mine-for-reports.fifo": false,
		"other-tail-0123456789abcdef.fifo": false, "decap-x-tail-0123456789abcdef.fifo": false,
	} {
		if got := isTailQueue("decap", name); got != want {
			t.Errorf("isTailQueue(decap, %q) = %v, want %v", name, got, want)
		}
	}
	if n, _ := tailQueueName("decap"); !isTailQueue("decap", n) {
		t.Errorf("isTailQueue(decap, %q) = false for a name tailQueueName made", n)
	}
	if _, err := tailQueueName(strings.Repeat("p", 60)); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("tailQueueName of a 60-character prefix = %v, want ErrInvalid (over 80 characters)", err)
	}
	arn, err := queueARNOf(testTopicARN, "decap-tail-0123456789abcdef.fifo")
	if want := "arn:aws:sqs:us-east-1:123456789012:decap-tail-0123456789abcdef.fifo"; err != nil || arn != want {
		t.Errorf("queueARNOf() = %q, %v, want %q", arn, err, want)
	}
	if _, err := queueARNOf("decap-build-events.fifo", "q.fifo"); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("queueARNOf of no ARN = %v, want ErrInvalid", err)
	}
}
