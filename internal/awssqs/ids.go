package awssqs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

// What SQS accepts, from the Amazon SQS API Reference (moto checks none of
// it, so the adapter enforces it and its tests check what it sends):
//
//   - SendMessage and SendMessageBatchRequestEntry, MessageGroupId and
//     MessageDeduplicationId: "The maximum length of MessageGroupId is 128
//     characters. Valid values: alphanumeric characters and punctuation
//     (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~)", and the same for
//     MessageDeduplicationId.
//     https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html
//     https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatchRequestEntry.html
//   - ReceiveMessage ReceiveRequestAttemptId: "The maximum length ... is 128
//     characters", "alphanumeric characters ... and punctuation"; a retry
//     with the same ID within 5 minutes returns the same messages, and SQS
//     refuses an ID whose call it answered as not retryable (attemptID,
//     staleAttempt).
//     https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html
//   - SendMessageBatchRequestEntry Id: "up to 80 characters ... alphanumeric
//     characters, hyphens(-), and underscores (_)" (the adapter sends the
//     entry's index).
//   - MessageAttributeValue: a String value "has the same restrictions on the
//     content as the message body" (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000
//     to #xFFFD | #x10000 to #x10FFFF) and must not be empty.
//     https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_MessageAttributeValue.html

// maxIDLen is the longest MessageGroupId or MessageDeduplicationId.
const maxIDLen = 128

// idPrefixLen is how much of a key a mapped ID keeps readable: the rest of
// the 128 characters are '~' and 64 hex digits of SHA-256.
const idPrefixLen = maxIDLen - 1 - 2*sha256.Size

// isIDChar reports whether SQS accepts r in a MessageGroupId or
// MessageDeduplicationId: ASCII letters, digits and punctuation, which is
// every printable ASCII character but the space.
func isIDChar(r rune) bool { return r > ' ' && r <= '~' }

// validID reports whether SQS accepts s as a MessageGroupId or
// MessageDeduplicationId.
func validID(s string) bool {
	return s != "" && len(s) <= maxIDLen && !strings.ContainsFunc(s, func(r rune) bool { return !isIDChar(r) })
}

// queueID returns what the adapter sends as the MessageGroupId for a lock key
// (and as the MessageDeduplicationId for a delivery or build ID): the key
// itself when SQS accepts it; otherwise, for a key longer than 128 characters
// or with characters SQS refuses (non-ASCII, such as "fix/umlaut-ü"), its
// first 63 characters with each refused character replaced by '_', then '~',
// then the lowercase hex SHA-256 of the whole key's UTF-8 bytes.
//
// It is stable (one lock key is always one message group, whichever service
// sends it) and, short of a SHA-256 collision, two keys never share an ID: a
// key SQS accepts is never mapped, and no such lock key contains '~' (git
// ref names and Decap's team and project names cannot), while every mapped
// ID does. Other producers sending to the queue apply the same rule (README,
// "The queue message").
func queueID(key string) string {
	if validID(key) {
		return key
	}
	var b strings.Builder
	b.Grow(maxIDLen)
	for _, r := range key {
		if b.Len() == idPrefixLen {
			break
		}
		if isIDChar(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(key))
	b.WriteByte('~')
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

// FIFOID is queueID for the other adapters that send to FIFO queues and
// topics (internal/awsevents: SNS FIFO topics take the same
// MessageGroupId and MessageDeduplicationId), so that every ID Decap sends
// to AWS is mapped by one rule.
func FIFOID(s string) string { return queueID(s) }

// EscapeBody is escapeBody for the other adapters whose messages end up
// in SQS bodies (an SNS topic's raw deliveries to its queues).
func EscapeBody(body []byte) string { return escapeBody(body) }

// escapeBody makes a JSON body acceptable to SQS, whose bodies may not hold
// U+FFFE or U+FFFF (encoding/json writes them as they are; it escapes control
// characters and replaces invalid UTF-8 itself). Outside strings a JSON text
// is ASCII, so writing them as \ufffe and \uffff changes nothing a JSON
// decoder sees.
func escapeBody(body []byte) string {
	s := string(body)
	if !strings.ContainsAny(s, "\ufffe\uffff") {
		return s
	}
	return strings.NewReplacer("\ufffe", `\ufffe`, "\uffff", `\uffff`).Replace(s)
}

// MaxQueueName is SQS's longest queue name, ".fifo" included.
const MaxQueueName = 80

// CheckQueueName checks a queue name Decap makes against SQS's rule
// (CreateQueue, QueueName: "up to 80 characters. Valid values:
// alphanumeric characters, hyphens (-), and underscores (_)", a FIFO
// queue's name ending in ".fifo", which counts in the 80): it gives
// build.ErrInvalid, naming the rule, for any other.
func CheckQueueName(name string, fifo bool) error {
	base := name
	if fifo {
		var ok bool
		if base, ok = strings.CutSuffix(name, ".fifo"); !ok {
			return fmt.Errorf("%w: SQS queue name %q: a FIFO queue's name ends in .fifo", build.ErrInvalid, name)
		}
	}
	if base == "" || len(name) > MaxQueueName || strings.ContainsFunc(base, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		return fmt.Errorf("%w: SQS queue name %q: want 1-%d of [A-Za-z0-9_-], .fifo included", build.ErrInvalid, name, MaxQueueName)
	}
	return nil
}
