package build

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MessageVersion is the version of the queue body this code writes. Decode
// accepts it and rejects others.
const MessageVersion = 1

// IdempotencyTTL is how long a delivery's build is remembered: longer than
// the 7 days over which GitHub lets a delivery be redelivered.
const IdempotencyTTL = 8 * 24 * time.Hour

// MaxMessageSize bounds a queue body; SQS allows 256 KiB, a request needs far
// less.
const MaxMessageSize = 64 << 10

// Request is one build request: a wish to build a ref. It is the queue
// message body, documented in the README for other producers.
type Request struct {
	V           int       `json:"v"`
	BuildID     ID        `json:"buildId,omitempty"`
	Team        string    `json:"team"`
	Project     string    `json:"project"`
	Ref         string    `json:"ref"`
	RefType     RefType   `json:"refType"`
	SHA         string    `json:"sha,omitempty"`
	Trigger     Trigger   `json:"trigger"`
	RequestedBy string    `json:"requestedBy,omitempty"`
	RequestedAt time.Time `json:"requestedAt"`
	DeliveryID  string    `json:"deliveryId,omitempty"`
	// RebuildOf names the build this request rebuilds; its record keeps
	// the link (Record.RebuildOf).
	RebuildOf ID `json:"rebuildOf,omitempty"`
	// PullRequest is the pull request a request of RefType Pull builds
	// (and nil for every other request); its record keeps it.
	PullRequest *PullRequest `json:"pullRequest,omitempty"`
}

// ProjectKey returns "team/project".
func (r Request) ProjectKey() string { return ProjectKey(r.Team, r.Project) }

// LockKey returns "team/project/ref", also the queue's message group.
func (r Request) LockKey() string { return LockKey(r.Team, r.Project, r.Ref) }

// DedupID is the queue's deduplication ID: the GitHub delivery ID for
// webhooks, the build ID otherwise.
func (r Request) DedupID() string {
	if r.DeliveryID != "" {
		return r.DeliveryID
	}
	return string(r.BuildID)
}

// IdempotencyKey names the request for the dispatcher's once-only check. It
// is the delivery ID when there is one (GitHub redeliveries keep it), else the
// build ID. A request with neither gets one from its queue message ID.
func (r Request) IdempotencyKey() string {
	if r.DeliveryID != "" {
		return "delivery:" + r.DeliveryID
	}
	if r.BuildID != "" {
		return "build:" + string(r.BuildID)
	}
	return ""
}

// Validate checks every field. A request without a build ID is valid: the
// dispatcher assigns one.
func (r Request) Validate() error {
	if r.V != MessageVersion {
		return fmt.Errorf("%w: message version %d is not supported (want %d)", ErrInvalid, r.V, MessageVersion)
	}
	if r.BuildID != "" {
		if _, err := ParseID(string(r.BuildID)); err != nil {
			return err
		}
	}
	if err := ValidateName("team", r.Team); err != nil {
		return err
	}
	if err := ValidateName("project", r.Project); err != nil {
		return err
	}
	if err := ValidateRef(r.Ref); err != nil {
		return err
	}
	if r.RefType != Branch && r.RefType != Tag && r.RefType != Pull {
		return fmt.Errorf("%w: refType %q is not branch, tag or pull", ErrInvalid, r.RefType)
	}
	switch r.Trigger {
	case TriggerPush, TriggerManual, TriggerAPI, TriggerPullRequest:
	default:
		return fmt.Errorf("%w: trigger %q is not push, manual, api or pull_request", ErrInvalid, r.Trigger)
	}
	if err := r.validatePull(); err != nil {
		return err
	}
	if r.SHA != "" && !isHex(r.SHA, 7, 64) {
		return fmt.Errorf("%w: sha %q is not a hex commit id", ErrInvalid, truncate(r.SHA, 80))
	}
	if len(r.RequestedBy) > 256 {
		return fmt.Errorf("%w: requestedBy is longer than 256 bytes", ErrInvalid)
	}
	if len(r.DeliveryID) > 128 || strings.ContainsFunc(r.DeliveryID, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return fmt.Errorf("%w: deliveryId must be at most 128 printable ASCII characters", ErrInvalid)
	}
	if r.RebuildOf != "" {
		if _, err := ParseID(string(r.RebuildOf)); err != nil {
			return fmt.Errorf("rebuildOf: %w", err)
		}
		if r.RebuildOf == r.BuildID {
			return fmt.Errorf("%w: build %s cannot be a rebuild of itself", ErrInvalid, r.BuildID)
		}
	}
	if r.RequestedAt.IsZero() {
		return fmt.Errorf("%w: requestedAt is missing", ErrInvalid)
	}
	if y := r.RequestedAt.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: requestedAt is outside the years 1 to 9999", ErrInvalid)
	}
	return nil
}

func isHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Full-ref prefixes that NormalizeRef strips.
const (
	branchRefPrefix = "refs/heads/"
	tagRefPrefix    = "refs/tags/"
)

// NormalizeRef turns a ref as a person or another producer may write it
// into the short branch or tag name Decap keys locks by, as a push webhook's
// ref is read: "refs/heads/x" is branch x and "refs/tags/v1" is tag v1,
// whatever t says when t is empty; a short name keeps t. A full ref that
// contradicts t, or another refs/ name (refs/pull/1/head), is an
// ErrInvalid error. So one branch has one lock key whatever the entry point
// (webhook, API, queue message). The name itself is checked by ValidateRef,
// not here.
func NormalizeRef(ref string, t RefType) (string, RefType, error) {
	var full RefType
	short := ref
	switch {
	case strings.HasPrefix(ref, branchRefPrefix):
		full, short = Branch, strings.TrimPrefix(ref, branchRefPrefix)
	case strings.HasPrefix(ref, tagRefPrefix):
		full, short = Tag, strings.TrimPrefix(ref, tagRefPrefix)
	case strings.HasPrefix(ref, "refs/"):
		return "", "", fmt.Errorf("%w: ref %q is neither a branch (refs/heads/...) nor a tag (refs/tags/...)", ErrInvalid, truncate(ref, 100))
	default:
		return ref, t, nil
	}
	if t != "" && t != full {
		return "", "", fmt.Errorf("%w: ref %q is a %s, but refType says %q", ErrInvalid, truncate(ref, 100), full, truncate(string(t), 20))
	}
	return short, full, nil
}

// Encode validates r and returns its queue body.
func Encode(r Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	r.RequestedAt = r.RequestedAt.UTC()
	return json.Marshal(r)
}

// Decode parses and validates a queue body. Unknown fields are ignored so
// producers may add their own; a missing or unsupported "v", a malformed body
// or an invalid field is an ErrInvalid error that says which. A full ref
// ("refs/heads/main") is normalized to its short name (see NormalizeRef).
func Decode(body []byte) (Request, error) {
	if len(body) > MaxMessageSize {
		return Request{}, fmt.Errorf("%w: message is %d bytes, more than %d", ErrInvalid, len(body), MaxMessageSize)
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: message is not a JSON request: %v", ErrInvalid, err)
	}
	if !atEnd(dec) {
		return Request{}, fmt.Errorf("%w: message has data after the JSON object", ErrInvalid)
	}
	var err error
	if r.Ref, r.RefType, err = NormalizeRef(r.Ref, r.RefType); err != nil {
		return Request{}, err
	}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}
