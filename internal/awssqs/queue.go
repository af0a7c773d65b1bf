// Package awssqs is the build queue on Amazon SQS: a FIFO queue and its FIFO
// dead-letter queue behind the same Queue port (buildtest.Queue) that
// sqlite.Queue serves on one machine.
//
// The message group is the lock key, so SQS keeps one branch's requests in
// order and hands out none of them while an earlier one is in flight; the
// deduplication ID is the delivery or build ID. A lock key SQS does not
// accept as a group ID (over 128 characters, or not ASCII) is sent as a
// readable prefix and its SHA-256 (see queueID), still one group per key. Deferral is
// ChangeMessageVisibility; redrive to the dead-letter queue after too many
// receives is done by SQS itself (the queue's redrive policy), not here.
package awssqs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/decap-ci/decap/internal/build"
)

// Limits of SQS.
const (
	// MaxReceive is the most messages one Receive returns.
	MaxReceive = 10
	// MaxWaitTime is the longest long poll of one ReceiveMessage call.
	MaxWaitTime = 20 * time.Second
	// MaxVisibilityTimeout is the longest a message can stay invisible.
	MaxVisibilityTimeout = 12 * time.Hour
	// maxBatchEntries is the most entries of one batch request.
	maxBatchEntries = 10
	// maxBatchBytes bounds the bodies and attributes of one
	// SendMessageBatch (256 KiB).
	maxBatchBytes = 256 << 10
	// maxReasonLen bounds the reason attribute of a dead letter.
	maxReasonLen = 1024
	// maxAttrLen bounds the other attributes; a ref is at most 255 bytes.
	maxAttrLen = 512
)

// Queue names that ResolveURLs looks up, after the prefix.
const (
	QueueSuffix = "-builds.fifo"
	DLQSuffix   = "-builds-dlq.fifo"
)

// MalformedGroupID is the dead-letter queue's group for a message that has
// no group of its own.
const MalformedGroupID = "malformed"

// deadLetterHold is how long DeadLetter keeps the message invisible while it
// copies it to the dead-letter queue.
const deadLetterHold = 60 * time.Second

// api lists the SQS calls Queue makes; *sqs.Client implements it.
type api interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// urlGetter is the one SQS call ResolveURLs makes; *sqs.Client implements it.
type urlGetter interface {
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
}

// Config configures a Queue.
type Config struct {
	// QueueURL is the build queue, a FIFO queue whose redrive policy names
	// DLQURL. Required.
	QueueURL string
	// DLQURL is the dead-letter queue, a FIFO queue. Required.
	DLQURL string
	// VisibilityTimeout, when positive, is asked for on every receive
	// (rounded up to whole seconds); zero keeps the queue's own.
	VisibilityTimeout time.Duration
	// WaitTime is the longest long poll of one ReceiveMessage call (default
	// and at most MaxWaitTime); a Receive waiting longer makes several
	// calls. A shorter WaitTime makes more calls while idle.
	WaitTime time.Duration
	// BatchWindow is how long a Publish or Delete that finds nothing in
	// flight waits for others to join its batch. Zero, the default, sends
	// at once; calls arriving while a batch is in flight still go together
	// in the next one.
	BatchWindow time.Duration
}

// Queue is the build queue on SQS (buildtest.Queue). It is safe for
// concurrent use.
type Queue struct {
	client  api
	cfg     Config
	sends   *batcher[outgoing]
	deletes *batcher[string]
}

// outgoing is one message to publish.
type outgoing struct {
	lockKey string
	groupID string
	body    string
	dedupID string
	attrs   map[string]types.MessageAttributeValue
	size    int
}

// New returns the queue at cfg.QueueURL, whose dead-letter queue is
// cfg.DLQURL, reached through client (usually an *sqs.Client). A missing URL
// gives build.ErrInvalid.
func New(client api, cfg Config) (*Queue, error) {
	if cfg.QueueURL == "" || cfg.DLQURL == "" {
		return nil, fmt.Errorf("%w: queue and dead-letter queue URLs are required", build.ErrInvalid)
	}
	if cfg.WaitTime <= 0 || cfg.WaitTime > MaxWaitTime {
		cfg.WaitTime = MaxWaitTime
	}
	if cfg.VisibilityTimeout > MaxVisibilityTimeout {
		cfg.VisibilityTimeout = MaxVisibilityTimeout
	}
	q := &Queue{client: client, cfg: cfg}
	q.sends = &batcher[outgoing]{
		window:   cfg.BatchWindow,
		maxItems: maxBatchEntries,
		maxBytes: maxBatchBytes,
		size:     func(o outgoing) int { return o.size },
		send:     q.sendBatch,
	}
	q.deletes = &batcher[string]{
		window:   cfg.BatchWindow,
		maxItems: maxBatchEntries,
		maxBytes: maxBatchEntries * (8 << 10), // receipts are about 1 KiB
		size:     func(r string) int { return len(r) },
		send:     q.deleteBatch,
	}
	return q, nil
}

// ResolveURLs returns the URLs of the queues named prefix+QueueSuffix and
// prefix+DLQSuffix ("<prefix>-builds.fifo", "<prefix>-builds-dlq.fifo").
// A queue that does not exist gives build.ErrNotFound, an empty prefix
// build.ErrInvalid.
func ResolveURLs(ctx context.Context, client urlGetter, prefix string) (queueURL, dlqURL string, err error) {
	if prefix == "" {
		return "", "", fmt.Errorf("%w: queue name prefix is empty", build.ErrInvalid)
	}
	urls := make([]string, 2)
	for i, name := range []string{prefix + QueueSuffix, prefix + DLQSuffix} {
		out, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			var missing *types.QueueDoesNotExist
			if errors.As(err, &missing) {
				return "", "", fmt.Errorf("resolve queue %s: %w: %w", name, build.ErrNotFound, err)
			}
			return "", "", fmt.Errorf("resolve queue %s: %w", name, classify(err))
		}
		urls[i] = aws.ToString(out.QueueUrl)
	}
	return urls[0], urls[1], nil
}

// Publish enqueues reqs with MessageGroupId = LockKey() and
// MessageDeduplicationId = DedupID(), each as queueID maps it when SQS would
// refuse it as it is; SQS accepts and drops a request whose deduplication ID
// it saw within the last 5 minutes. The body is build.Encode's (with U+FFFE
// and U+FFFF escaped, which SQS refuses); the message attributes team,
// project, ref and trigger mirror it for the AWS console, with characters
// SQS refuses replaced by '?'.
//
// Every request is validated before anything is sent: an invalid request,
// or one with neither delivery nor build ID (SQS FIFO needs a deduplication
// ID), gives build.ErrInvalid and publishes nothing. Concurrent calls share
// SendMessageBatch requests (see Config.BatchWindow); a call of more than 10
// requests is sent in parts, one after another, and stops at the first part
// that fails. A failure returns an error naming the requests that were not
// published (build.ErrUnavailable when retrying may help); the others were,
// and publishing them again within 5 minutes is harmless.
func (q *Queue) Publish(ctx context.Context, reqs ...build.Request) error {
	out := make([]outgoing, len(reqs))
	for i, r := range reqs {
		body, err := build.Encode(r)
		if err != nil {
			return fmt.Errorf("publish %s: %w", r.LockKey(), err)
		}
		if r.DedupID() == "" {
			return fmt.Errorf("publish %s: %w: request has neither delivery nor build id", r.LockKey(), build.ErrInvalid)
		}
		o := outgoing{
			lockKey: r.LockKey(),
			groupID: queueID(r.LockKey()),
			body:    escapeBody(body),
			dedupID: queueID(r.DedupID()),
			attrs: map[string]types.MessageAttributeValue{
				"team":    stringAttr(attrText(r.Team, maxAttrLen)),
				"project": stringAttr(attrText(r.Project, maxAttrLen)),
				"ref":     stringAttr(attrText(r.Ref, maxAttrLen)),
				"trigger": stringAttr(attrText(string(r.Trigger), maxAttrLen)),
			},
		}
		o.size = len(o.body)
		for name, v := range o.attrs {
			o.size += len(name) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue))
		}
		out[i] = o
	}
	for len(out) > 0 {
		part := out[:partLen(out)]
		out = out[len(part):]
		errs, err := q.sends.do(ctx, part)
		if err != nil {
			return fmt.Errorf("publish %d requests: %w", len(part), err)
		}
		var failed []error
		for i, e := range errs {
			if e != nil {
				failed = append(failed, fmt.Errorf("%s: %w", part[i].lockKey, e))
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("publish: %w", errors.Join(failed...))
		}
	}
	return nil
}

// partLen returns how many of out fit one batch request.
func partLen(out []outgoing) int {
	n, size := 0, 0
	for n < len(out) && n < maxBatchEntries && (n == 0 || size+out[n].size <= maxBatchBytes) {
		size += out[n].size
		n++
	}
	return n
}

func stringAttr(s string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(s)}
}

// sendBatch sends one SendMessageBatch and returns one error per entry.
func (q *Queue) sendBatch(ctx context.Context, items []outgoing) []error {
	in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(q.cfg.QueueURL)}
	for i, o := range items {
		in.Entries = append(in.Entries, types.SendMessageBatchRequestEntry{
			Id:                     aws.String(strconv.Itoa(i)),
			MessageBody:            aws.String(o.body),
			MessageGroupId:         aws.String(o.groupID),
			MessageDeduplicationId: aws.String(o.dedupID),
			MessageAttributes:      o.attrs,
		})
	}
	out, err := q.client.SendMessageBatch(ctx, in)
	if err != nil {
		return fill(len(items), classify(err))
	}
	return entryErrors(len(items), out.Successful, out.Failed, func(e types.SendMessageBatchResultEntry) *string { return e.Id })
}

// entryErrors returns one error per entry of a batch request from its
// successful and failed entries; an entry in neither list is
// build.ErrUnavailable.
func entryErrors[S any](n int, ok []S, failed []types.BatchResultErrorEntry, id func(S) *string) []error {
	errs := make([]error, n)
	done := make([]bool, n)
	index := func(p *string) int {
		i, err := strconv.Atoi(aws.ToString(p))
		if err != nil || i < 0 || i >= n {
			return -1
		}
		return i
	}
	for _, s := range ok {
		if i := index(id(s)); i >= 0 {
			done[i] = true
		}
	}
	for _, f := range failed {
		if i := index(f.Id); i >= 0 {
			errs[i] = entryError(aws.ToString(f.Code), aws.ToString(f.Message), f.SenderFault)
			done[i] = true
		}
	}
	for i := range errs {
		if !done[i] {
			errs[i] = fmt.Errorf("%w: batch answer lacks entry %d", build.ErrUnavailable, i)
		}
	}
	return errs
}

func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// Receive returns up to n messages (1 to MaxReceive), long-polling up to
// wait (rounded up to whole seconds) for the first. Within a group messages
// come in publish order and none while an earlier one is in flight; SQS may
// return several messages of one group in one batch, in order. Each returned
// message is invisible for the visibility timeout. Messages received more
// often than the redrive policy allows are moved to the dead-letter queue by
// SQS, not returned.
//
// A wait longer than Config.WaitTime takes several ReceiveMessage calls. A
// wait of 0 is a short poll even when the queue's
// ReceiveMessageWaitTimeSeconds asks for long polling. When ctx ends during
// the wait, the error wraps ctx.Err(); throttling and unreachable SQS give
// build.ErrUnavailable.
func (q *Queue) Receive(ctx context.Context, n int, wait time.Duration) ([]build.Message, error) {
	n = min(max(n, 1), MaxReceive)
	deadline := time.Now().Add(wait)
	in := &sqs.ReceiveMessageInput{
		QueueUrl:            aws.String(q.cfg.QueueURL),
		MaxNumberOfMessages: int32(n),
		VisibilityTimeout:   int32(seconds(q.cfg.VisibilityTimeout)),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount,
			types.MessageSystemAttributeNameSentTimestamp,
			types.MessageSystemAttributeNameMessageGroupId,
		},
	}
	for {
		in.WaitTimeSeconds = int32(seconds(min(time.Until(deadline), q.cfg.WaitTime)))
		// One attempt ID per call, kept by the SDK's retries of it: a
		// receive whose answer was lost (a reset connection, a 5xx)
		// and is retried gets the same messages back, where without an
		// ID (SQS then makes one per request) they stay in flight, and
		// their whole message group with them, until the visibility
		// timeout ends.
		in.ReceiveRequestAttemptId = aws.String(attemptID())
		var optFns []func(*sqs.Options)
		if in.WaitTimeSeconds == 0 {
			optFns = append(optFns, noWait)
		}
		out, err := q.client.ReceiveMessage(ctx, in, optFns...)
		if err != nil && staleAttempt(err) && ctx.Err() == nil {
			// SQS refuses an attempt ID once it answered that the call
			// may not be retried (a throttled receive), and the SDK's
			// retry repeated it: a fresh ID asks again, once.
			in.ReceiveRequestAttemptId = aws.String(attemptID())
			out, err = q.client.ReceiveMessage(ctx, in, optFns...)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("receive: %w", ctx.Err())
			}
			return nil, fmt.Errorf("receive: %w", classify(err))
		}
		if len(out.Messages) > 0 {
			msgs := make([]build.Message, len(out.Messages))
			for i, m := range out.Messages {
				msgs[i] = toMessage(m)
			}
			return msgs, nil
		}
		if time.Until(deadline) <= 0 {
			return nil, nil
		}
	}
}

// attemptID returns a fresh ReceiveRequestAttemptId: 32 random hex
// digits (SQS: at most 128 characters, letters, digits and punctuation).
func attemptID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// toMessage converts a received SQS message. GroupID is the MessageGroupId as
// sent: the lock key, or what queueID made of a long or non-ASCII one (one
// group per lock key either way; the lock key itself is in the body).
// Missing or unparsable system attributes leave ReceiveCount 0 and SentAt
// zero.
func toMessage(m types.Message) build.Message {
	msg := build.Message{
		ID:      aws.ToString(m.MessageId),
		Receipt: aws.ToString(m.ReceiptHandle),
		GroupID: m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)],
		Body:    []byte(aws.ToString(m.Body)),
	}
	msg.ReceiveCount, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
		msg.SentAt = time.UnixMilli(ms).UTC()
	}
	return msg
}

// seconds rounds d up to whole seconds; d <= 0 gives 0.
func seconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// Delete removes a received message. Concurrent deletes share
// DeleteMessageBatch requests (see Config.BatchWindow). A malformed or
// expired receipt gives build.ErrNotFound. SQS may accept the receipt of an
// earlier delivery, or of a message already deleted, without error.
func (q *Queue) Delete(ctx context.Context, receipt string) error {
	if receipt == "" {
		return fmt.Errorf("delete message: %w: empty receipt", build.ErrNotFound)
	}
	errs, err := q.deletes.do(ctx, []string{receipt})
	if err != nil {
		return fmt.Errorf("delete message: %w", err)
	}
	if errs[0] != nil {
		return fmt.Errorf("delete message: %w", errs[0])
	}
	return nil
}

// deleteBatch deletes receipts with one request: DeleteMessage for one,
// DeleteMessageBatch for more. It returns one error per receipt.
func (q *Queue) deleteBatch(ctx context.Context, receipts []string) []error {
	if len(receipts) == 1 {
		_, err := q.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
			QueueUrl:      aws.String(q.cfg.QueueURL),
			ReceiptHandle: aws.String(receipts[0]),
		})
		return []error{classify(err)}
	}
	in := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(q.cfg.QueueURL)}
	for i, r := range receipts {
		in.Entries = append(in.Entries, types.DeleteMessageBatchRequestEntry{
			Id:            aws.String(strconv.Itoa(i)),
			ReceiptHandle: aws.String(r),
		})
	}
	out, err := q.client.DeleteMessageBatch(ctx, in)
	if err != nil {
		return fill(len(receipts), classify(err))
	}
	return entryErrors(len(receipts), out.Successful, out.Failed, func(e types.DeleteMessageBatchResultEntry) *string { return e.Id })
}

// ChangeVisibility makes a received message visible again after d, rounded
// up to whole seconds (0 = now) and capped at MaxVisibilityTimeout. A
// malformed or expired receipt, or a message no longer in flight, gives
// build.ErrNotFound; a negative d, or one that takes the message past SQS's
// 12-hour limit, build.ErrInvalid.
func (q *Queue) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	if err := q.changeVisibility(ctx, receipt, d); err != nil {
		return fmt.Errorf("change visibility: %w", err)
	}
	return nil
}

func (q *Queue) changeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%w: negative duration %v", build.ErrInvalid, d)
	}
	if receipt == "" {
		return fmt.Errorf("%w: empty receipt", build.ErrNotFound)
	}
	_, err := q.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(q.cfg.QueueURL),
		ReceiptHandle:     aws.String(receipt),
		VisibilityTimeout: int32(seconds(min(d, MaxVisibilityTimeout))),
	})
	return classify(err)
}

// DeadLetter moves a received message to the dead-letter queue and deletes
// it from the queue. The copy keeps the body and the group (MalformedGroupID
// if m has none); its deduplication ID is m's message ID, so a repeated
// DeadLetter of one message within 5 minutes stores one copy; its message
// attributes are reason (sanitized and truncated to 1 KiB) and
// originalMessageId.
//
// DeadLetter first extends m's visibility, which also checks the receipt: a
// stale receipt gives build.ErrNotFound before anything is copied. If the
// final delete fails, the message comes back later and the copy stays.
func (q *Queue) DeadLetter(ctx context.Context, m build.Message, reason string) error {
	if err := q.changeVisibility(ctx, m.Receipt, deadLetterHold); err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	group := m.GroupID
	if group == "" {
		group = MalformedGroupID
	}
	dedup := m.ID
	if dedup == "" {
		sum := sha256.Sum256(m.Body)
		dedup = hex.EncodeToString(sum[:])
	}
	_, err := q.client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(q.cfg.DLQURL),
		MessageBody: aws.String(string(m.Body)),
		// A message SQS delivered has a group and ID it accepts; queueID
		// keeps a hand-made build.Message within the rules too.
		MessageGroupId:         aws.String(queueID(group)),
		MessageDeduplicationId: aws.String(queueID(dedup)),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"reason":            stringAttr(attrText(reason, maxReasonLen)),
			"originalMessageId": stringAttr(attrText(m.ID, 128)),
		},
	})
	if err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, classify(err))
	}
	if err := q.Delete(ctx, m.Receipt); err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	return nil
}

// attrText makes s a valid, non-empty SQS string attribute value of at most
// n bytes: characters SQS rejects become '?', and a cut ends with "…".
func attrText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20 || (r >= 0xD800 && r <= 0xDFFF) || r == 0xFFFE || r == 0xFFFF:
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if s == "" {
		return "-"
	}
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// Stats counts messages from the queues' approximate attributes, which SQS
// updates within about a minute: Visible is ApproximateNumberOfMessages
// (including messages waiting behind an in-flight message of their group)
// plus ApproximateNumberOfMessagesDelayed, InFlight is
// ApproximateNumberOfMessagesNotVisible, and DeadLettered counts every
// message in the dead-letter queue. OldestAge is always 0 (unknown): SQS
// reports the age of the oldest message only as a CloudWatch metric.
func (q *Queue) Stats(ctx context.Context) (build.QueueStats, error) {
	queue, err := q.attributes(ctx, q.cfg.QueueURL)
	if err != nil {
		return build.QueueStats{}, fmt.Errorf("queue stats: %w", err)
	}
	dead, err := q.attributes(ctx, q.cfg.DLQURL)
	if err != nil {
		return build.QueueStats{}, fmt.Errorf("dead-letter queue stats: %w", err)
	}
	return build.QueueStats{
		Visible:      queue.visible + queue.delayed,
		InFlight:     queue.notVisible,
		DeadLettered: dead.visible + dead.notVisible + dead.delayed,
	}, nil
}

// Depth is Stats without the dead-letter queue (build.Depther;
// DeadLettered build.NotCounted): one GetQueueAttributes instead of two,
// for a sampler that reads the dead-letter queue less often.
func (q *Queue) Depth(ctx context.Context) (build.QueueStats, error) {
	queue, err := q.attributes(ctx, q.cfg.QueueURL)
	if err != nil {
		return build.QueueStats{}, fmt.Errorf("queue depth: %w", err)
	}
	return build.QueueStats{Visible: queue.visible + queue.delayed, InFlight: queue.notVisible, DeadLettered: build.NotCounted}, nil
}

type counts struct{ visible, notVisible, delayed int }

func (q *Queue) attributes(ctx context.Context, url string) (counts, error) {
	out, err := q.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	if err != nil {
		return counts{}, classify(err)
	}
	get := func(name types.QueueAttributeName) int {
		n, _ := strconv.Atoi(out.Attributes[string(name)])
		return n
	}
	return counts{
		visible:    get(types.QueueAttributeNameApproximateNumberOfMessages),
		notVisible: get(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		delayed:    get(types.QueueAttributeNameApproximateNumberOfMessagesDelayed),
	}, nil
}
