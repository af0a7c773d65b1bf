// Package awsevents is the build-event stream on AWS (DESIGN.md, "Build
// events", invariant 7): a watermill Publisher that publishes the events
// the forwarder takes from the DynamoDB outbox to the SNS FIFO topic
// <prefix>-build-events.fifo, and a build.EventStream whose consumer
// groups read SQS FIFO queues <prefix>-events-<group>.fifo subscribed to
// that topic with RawMessageDelivery (each SQS body is one event, as
// published). Other systems subscribe queues of their own the same way
// (README, "Build events").
//
// Why not watermill-aws's sns Publisher: it is not among the modules this
// project may use, its Publish calls SNS with context.Background(), so the
// forwarder's per-round timeout could not bound a stalled call, its
// Marshaler cannot refuse a message (no error), where the limits below
// must be checked before the call, and it creates the topic when it is
// missing, which would need sns:CreateTopic for every service. The
// Publisher here is a small watermill Publisher over service/sns's Publish;
// the Stream's subscriber is a small one over service/sqs that keeps a
// message invisible while its handler retries (watermill-aws's SQS
// subscriber never extends visibility).
//
// What SNS accepts, from the Amazon SNS API Reference (Publish) and
// Developer Guide (moto checks none of it; the Publisher enforces it and
// its tests check what it sends):
//
//   - MessageGroupId and MessageDeduplicationId: "up to 128 alphanumeric
//     characters (a-z, A-Z, 0-9) and punctuation
//     (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~)"; a FIFO topic requires the group
//     and, without content-based deduplication, the deduplication ID. The
//     group is the build ID, so a build's events are delivered in order;
//     the deduplication ID is the event ID, so a second publish of an event
//     within SNS's 5-minute deduplication interval (a forwarder that
//     crashed after publishing, before it removed the event from the
//     outbox) is accepted and not delivered again. IDs outside the rule are
//     mapped as the SQS adapter maps lock keys (awssqs.FIFOID).
//   - Message: UTF-8, "at most 256 KB in size (262,144 bytes, not 262,144
//     characters)", message attributes included. An event whose encoding
//     does not fit (a record of up to 400 KB fits a DynamoDB item) is
//     published with its data trimmed to the record's bounded fields and
//     the CloudEvents extension dataref, the URL of GET
//     /api/v1/builds/{id} where the whole record is: it is never refused,
//     which would hold its build's later events back for ever.
//   - A subscribed SQS queue takes the message as its body (raw delivery),
//     and SQS bodies may not hold U+FFFE or U+FFFF, which encoding/json
//     writes as they are: they are written as JSON escapes, which changes
//     nothing a JSON decoder sees.
//   - Message attributes: raw delivery to SQS fails for a message with more
//     than 10; the Publisher sends two, type and subject (String), for
//     subscription filter policies.
package awsevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sns/types"

	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
)

// Topic is the stream's one topic as watermill names it: Publish takes it
// (or the topic's ARN) for the topic the Publisher was made for.
const Topic = "build-events"

// TopicName returns the SNS topic of the build events of prefix.
func TopicName(prefix string) string { return prefix + "-build-events.fifo" }

// TopicARN returns the ARN of TopicName(prefix) in an account and region.
func TopicARN(partition, region, account, prefix string) string {
	return "arn:" + partition + ":sns:" + region + ":" + account + ":" + TopicName(prefix)
}

// MaxMessageBytes is the largest SNS message, attributes included.
const MaxMessageBytes = 262144

// Attributes of every published message (String), for filter policies.
const (
	AttributeType    = "type"
	AttributeSubject = "subject"
)

// snsAPI is what the Publisher calls.
type snsAPI interface {
	Publish(ctx context.Context, in *sns.PublishInput, optFns ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// Publisher publishes build events to one SNS FIFO topic. It is a
// watermill message.Publisher whose messages are events (events.Message).
type Publisher struct {
	client   snsAPI
	topicARN string
}

// NewPublisher returns a Publisher to the topic topicARN.
func NewPublisher(client snsAPI, topicARN string) (*Publisher, error) {
	if client == nil || !strings.HasPrefix(topicARN, "arn:") || !strings.HasSuffix(topicARN, ".fifo") {
		return nil, fmt.Errorf("%w: the build events' topic %q is not a FIFO topic's ARN", build.ErrInvalid, topicARN)
	}
	return &Publisher{client: client, topicARN: topicARN}, nil
}

// Publish publishes msgs in order, each with its own context's deadline,
// and stops at the first that fails. topic is Topic or the topic's ARN. A
// message that is no build event (build.DecodeEvent refuses its payload)
// gives ErrInvalid before any call.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if topic != Topic && topic != p.topicARN {
		return fmt.Errorf("%w: topic %q: this publisher publishes to %s only", build.ErrInvalid, topic, p.topicARN)
	}
	for _, m := range msgs {
		in, err := p.input(m)
		if err != nil {
			return err
		}
		if _, err := p.client.Publish(m.Context(), in); err != nil {
			return fmt.Errorf("publish event %s to %s: %w", m.UUID, p.topicARN, unavailable(err))
		}
	}
	return nil
}

// Close does nothing: the client is the caller's.
func (p *Publisher) Close() error { return nil }

// unavailable marks err as ErrUnavailable unless it is the context's.
func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
}

// input returns the Publish call of an event's message, within SNS's
// limits (package comment).
func (p *Publisher) input(m *message.Message) (*sns.PublishInput, error) {
	e, err := build.DecodeEvent(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", m.UUID, err)
	}
	attrs := map[string]types.MessageAttributeValue{
		AttributeType:    {DataType: aws.String("String"), StringValue: aws.String(string(e.Type))},
		AttributeSubject: {DataType: aws.String("String"), StringValue: aws.String(string(e.Subject))},
	}
	body := awssqs.EscapeBody(m.Payload)
	if messageSize(body, attrs) > MaxMessageBytes {
		trimmed, err := trimmedEvent(e)
		if err != nil {
			return nil, err
		}
		body = awssqs.EscapeBody(trimmed)
		if n := messageSize(body, attrs); n > MaxMessageBytes {
			return nil, fmt.Errorf("%w: event %s is %d bytes trimmed, over SNS's %d", build.ErrInvalid, e.ID, n, MaxMessageBytes)
		}
	}
	return &sns.PublishInput{
		TopicArn:               aws.String(p.topicARN),
		Message:                aws.String(body),
		MessageAttributes:      attrs,
		MessageGroupId:         aws.String(awssqs.FIFOID(string(e.Subject))),
		MessageDeduplicationId: aws.String(awssqs.FIFOID(e.ID)),
	}, nil
}

// messageSize is what SNS counts against MaxMessageBytes: the body and
// each attribute's name, type and value.
func messageSize(body string, attrs map[string]types.MessageAttributeValue) int {
	n := len(body)
	for k, v := range attrs {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue))
	}
	return n
}

// trimmedEvent returns e encoded with its data cut to the record's bounded
// fields (no reason, pull request, secrets, requester, delivery or keys)
// and the extension dataref, the URL of the whole record in Decap's API.
func trimmedEvent(e build.Event) ([]byte, error) {
	e.Record = trimmedRecord(e.Record)
	b, err := build.EncodeEvent(e)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("trim event %s: %w", e.ID, err)
	}
	ref, err := json.Marshal(DataRef(e.Source, e.Subject))
	if err != nil {
		return nil, fmt.Errorf("trim event %s: %w", e.ID, err)
	}
	fields["dataref"] = ref
	return json.Marshal(fields)
}

// DataRef returns the dataref of a trimmed event of build id from the
// Decap at source (DECAP_PUBLIC_URL): its GET /api/v1/builds/{id}.
func DataRef(source string, id build.ID) string {
	return strings.TrimRight(source, "/") + "/api/v1/builds/" + url.PathEscape(string(id))
}

// trimmedRecord keeps the fields of r whose size Decap bounds: IDs,
// names (build.MaxNameLen, build.MaxRefLen), status and times.
func trimmedRecord(r build.Record) build.Record {
	return build.Record{
		BuildID: r.BuildID, Number: r.Number, RebuildOf: r.RebuildOf, Team: r.Team, Project: r.Project,
		Ref: r.Ref, RefType: r.RefType, SHA: r.SHA, Trigger: r.Trigger, Status: r.Status, ExitCode: r.ExitCode,
		QueuedAt: r.QueuedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, NextAttemptAt: r.NextAttemptAt,
		CancelRequestedAt: r.CancelRequestedAt, LaunchingAt: r.LaunchingAt, Attempt: r.Attempt, RetryOf: r.RetryOf,
		Infra: r.Infra, SupersededBy: r.SupersededBy, InfraRetries: r.InfraRetries, Supersedable: r.Supersedable,
	}
}
