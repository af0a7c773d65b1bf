package awsevents

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxIDLen is the longest MessageGroupId or MessageDeduplicationId.
const maxIDLen = 128

// idPrefixLen is how much of a mapped ID stays readable: the rest of the
// 128 characters are '~' and 64 hex digits of SHA-256.
const idPrefixLen = maxIDLen - 1 - 2*sha256.Size

// isIDChar reports whether SNS accepts r in a MessageGroupId or
// MessageDeduplicationId: ASCII letters, digits and punctuation, every
// printable ASCII character but the space.
func isIDChar(r rune) bool { return r > ' ' && r <= '~' }

func validID(s string) bool {
	return s != "" && len(s) <= maxIDLen && !strings.ContainsFunc(s, func(r rune) bool { return !isIDChar(r) })
}

// fifoID returns s as a MessageGroupId or MessageDeduplicationId, by the
// rule of the SQS adapter (internal/awssqs queueID): s itself when SNS
// accepts it (every build ID and event ID Decap makes); otherwise its first
// 63 characters, each refused one replaced by '_', then '~', then the
// lowercase hex SHA-256 of the whole of s. One s is always one ID, and no
// two differ but by a SHA-256 collision: an accepted s is never mapped and
// contains no '~' (build IDs cannot), while every mapped ID does.
func fifoID(s string) string {
	if validID(s) {
		return s
	}
	var b strings.Builder
	b.Grow(maxIDLen)
	for _, r := range s {
		if b.Len() == idPrefixLen {
			break
		}
		if isIDChar(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(s))
	b.WriteByte('~')
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}
