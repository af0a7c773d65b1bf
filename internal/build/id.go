package build

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
)

// ID identifies one build: a UUIDv7 in its canonical lowercase text form, so
// IDs sort by creation time.
type ID string

// NewID returns a fresh UUIDv7 whose timestamp is now.
func NewID(now time.Time) ID {
	var b [16]byte
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on Linux
	return uuid7(now, b)
}

// uuid7 returns the UUIDv7 whose timestamp is at and whose other bits are
// b's from byte 6 on (but the version and variant bits).
func uuid7(at time.Time, b [16]byte) ID {
	ms := uint64(at.UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	b[6] = 0x70 | b[6]&0x0f // version 7
	b[8] = 0x80 | b[8]&0x3f // RFC 9562 variant
	return ID(format(b))
}

func format(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// ParseID checks that s is a canonical lowercase UUID (any version: other
// producers may bring their own) and returns it as an ID.
func ParseID(s string) (ID, error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return "", fmt.Errorf("%w: build id %q is not a UUID", ErrInvalid, truncate(s, 64))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: build id %q is not a lowercase UUID", ErrInvalid, truncate(s, 64))
		}
	}
	return ID(s), nil
}

// Time returns the creation time encoded in a UUIDv7, or the zero time for
// other versions.
func (id ID) Time() time.Time {
	s := string(id)
	if len(s) != 36 || s[14] != '7' {
		return time.Time{}
	}
	var b [6]byte
	if _, err := hex.Decode(b[0:4], []byte(s[0:8])); err != nil {
		return time.Time{}
	}
	if _, err := hex.Decode(b[4:6], []byte(s[9:13])); err != nil {
		return time.Time{}
	}
	ms := uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(binary.BigEndian.Uint32(b[2:6]))
	return time.UnixMilli(int64(ms)).UTC()
}

// PodName is the name of the build's Pod (or local process directory): "build-" and the
// ID, a valid DNS label.
func (id ID) PodName() string { return "build-" + string(id) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
