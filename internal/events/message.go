// Package events moves build events from the Records stores' outboxes to
// the event stream, and from the stream to Decap's consumers: the
// Forwarder publishes what a store's outbox holds through a watermill
// Publisher (a SNS topic on AWS, the SQLite stream on the embedded
// default), and Consume hands what a watermill Subscriber delivers to a
// build.EventHandler. Message and EventOf convert between build.Event and
// watermill messages. It speaks build's types and imports no SDK.
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
)

// Metadata keys of an event's message. The group and deduplication keys
// name what a FIFO transport uses as MessageGroupId and
// MessageDeduplicationId: a build's events are one group (in order), and a
// second publish of an event (a forwarder that crashed before it removed
// the event from the outbox) is dropped. internal/awsevents, the SNS
// publisher, derives both from the event itself (its subject and ID,
// mapped by AWS's rules as internal/awssqs maps lock keys) rather than
// from the metadata.
const (
	MetadataSubject = "subject"
	MetadataType    = "type"
	MetadataVersion = "recordversion"
	MetadataGroupID = "MessageGroupId"
	MetadataDedupID = "MessageDeduplicationId"
)

// Message returns e as a watermill message: UUID the event ID, payload the
// event in JSON structured mode (build.EncodeEvent; e needs its Source),
// and the metadata above.
func Message(e build.Event) (*message.Message, error) {
	body, err := build.EncodeEvent(e)
	if err != nil {
		return nil, err
	}
	m := message.NewMessage(e.ID, body)
	m.Metadata.Set(MetadataSubject, string(e.Subject))
	m.Metadata.Set(MetadataType, string(e.Type))
	m.Metadata.Set(MetadataVersion, strconv.Itoa(e.Version))
	m.Metadata.Set(MetadataGroupID, fifoID(string(e.Subject)))
	m.Metadata.Set(MetadataDedupID, fifoID(e.ID))
	return m, nil
}

// EventOf decodes an event's message: the payload is the event, whatever
// the metadata say (a relay may drop them). ErrInvalid if it is no event.
func EventOf(m *message.Message) (build.Event, error) {
	e, err := build.DecodeEvent(m.Payload)
	if err != nil {
		return build.Event{}, fmt.Errorf("message %s: %w", m.UUID, err)
	}
	return e, nil
}

// fifoID returns s as a SNS/SQS FIFO MessageGroupId or
// MessageDeduplicationId: at most 128 characters of ASCII alphanumerics
// and punctuation (AWS's rule; emulators do not check it). Build IDs and
// event IDs already are; anything else becomes a prefix of its allowed
// characters and a SHA-256 of the whole, so that one s is one ID.
func fifoID(s string) string {
	ok := len(s) <= 128
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] < 0x7f
	}
	if ok && s != "" {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	prefix := make([]byte, 0, 60)
	for i := 0; i < len(s) && len(prefix) < 60; i++ {
		if s[i] > ' ' && s[i] < 0x7f {
			prefix = append(prefix, s[i])
		}
	}
	return string(prefix) + "-" + hex.EncodeToString(sum[:])
}
