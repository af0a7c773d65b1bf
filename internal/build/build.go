// Package build is Decap's vocabulary: build requests, IDs, refs, lock keys,
// statuses, records and project descriptors, the versioned queue message, and
// the sentinel errors that every other package decides on with errors.Is.
//
// It does no I/O. Every value that crosses a process boundary (queue body,
// record, descriptor) is validated here, so adapters and logic packages can
// trust what they receive.
package build

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Adapters wrap them; callers test with errors.Is.
var (
	// ErrNotFound means the build, lock, project or object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the input was rejected; the wrapping message says why.
	ErrInvalid = errors.New("invalid")
	// ErrLocked means another build holds the lock key.
	ErrLocked = errors.New("lock key busy")
	// ErrCapReached means the cluster-wide concurrency cap is reached.
	ErrCapReached = errors.New("concurrency cap reached")
	// ErrConflict means a conditional write lost, e.g. a final record would
	// be overwritten.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable means a backend could not be reached; retrying later may
	// succeed.
	ErrUnavailable = errors.New("backend unavailable")
)

// RefType tells a branch from a tag.
type RefType string

// Ref types.
const (
	Branch RefType = "branch"
	Tag    RefType = "tag"
)

// Trigger says who asked for a build.
type Trigger string

// Triggers.
const (
	TriggerPush   Trigger = "push"
	TriggerManual Trigger = "manual"
	TriggerAPI    Trigger = "api"
)

// Limits on names. GitHub allows 39-character owners and 100-character
// repository names; git refs have no hard limit but Decap keeps them to what
// fits a DynamoDB key and a Pod annotation comfortably.
const (
	MaxNameLen = 100
	MaxRefLen  = 255
)

// ValidateName checks a team or project name: 1–100 of [A-Za-z0-9._-],
// not starting with '.' or '-'. It rejects path tricks such as "..".
func ValidateName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, kind)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, kind, MaxNameLen)
	}
	if s[0] == '.' || s[0] == '-' {
		return fmt.Errorf("%w: %s %q starts with %q", ErrInvalid, kind, s, s[:1])
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalid, kind, s, r)
		}
	}
	return nil
}

// ValidateRef checks a branch or tag name (without refs/heads/ or
// refs/tags/) against git's check-ref-format rules, plus a length limit. A
// name starting with "refs/" is refused: Decap's refs are short names, so
// that each branch has exactly one lock key.
func ValidateRef(ref string) error {
	switch {
	case ref == "":
		return fmt.Errorf("%w: ref is empty", ErrInvalid)
	case len(ref) > MaxRefLen:
		return fmt.Errorf("%w: ref is longer than %d bytes", ErrInvalid, MaxRefLen)
	case !utf8.ValidString(ref):
		return fmt.Errorf("%w: ref is not valid UTF-8", ErrInvalid)
	case ref == "@":
		return fmt.Errorf("%w: ref %q is reserved", ErrInvalid, ref)
	case strings.HasPrefix(ref, "refs/"):
		// One branch, one lock key: "refs/heads/main" and "main" must not
		// be two refs (see NormalizeRef, which the entry points apply).
		return fmt.Errorf("%w: ref %q starts with refs/: give the branch or tag name alone", ErrInvalid, ref)
	case strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/"),
		strings.HasPrefix(ref, "-"),
		strings.HasSuffix(ref, "."),
		strings.HasSuffix(ref, ".lock"),
		strings.Contains(ref, ".."),
		strings.Contains(ref, "//"),
		strings.Contains(ref, "@{"):
		return fmt.Errorf("%w: ref %q is not a valid git ref name", ErrInvalid, ref)
	}
	for _, part := range strings.Split(ref, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("%w: ref %q has a component starting with '.'", ErrInvalid, ref)
		}
		if strings.HasSuffix(part, ".lock") {
			return fmt.Errorf("%w: ref %q has a component ending with .lock", ErrInvalid, ref)
		}
	}
	for _, r := range ref {
		if r == utf8.RuneError {
			// What a JSON decoder makes of invalid UTF-8: no repository
			// has such a ref.
			return fmt.Errorf("%w: ref %q contains U+FFFD (invalid UTF-8?)", ErrInvalid, ref)
		}
		if r < 0x20 || r == 0x7f || r == ' ' || strings.ContainsRune("~^:?*[\\", r) {
			return fmt.Errorf("%w: ref %q contains %q", ErrInvalid, ref, r)
		}
	}
	return nil
}

// ProjectKey is "team/project".
func ProjectKey(team, project string) string { return team + "/" + project }

// LockKey is "team/project/ref": at most one running build per lock key.
func LockKey(team, project, ref string) string { return team + "/" + project + "/" + ref }

// SplitLockKey splits a lock key into team, project and ref. The ref may
// contain slashes.
func SplitLockKey(key string) (team, project, ref string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: lock key %q is not team/project/ref", ErrInvalid, key)
	}
	if err := ValidateName("team", parts[0]); err != nil {
		return "", "", "", err
	}
	if err := ValidateName("project", parts[1]); err != nil {
		return "", "", "", err
	}
	if err := ValidateRef(parts[2]); err != nil {
		return "", "", "", err
	}
	return parts[0], parts[1], parts[2], nil
}

// Status is the state of a build record.
type Status string

// Statuses. Queued and Deferred are waiting, Running is running, the rest
// are final: a final record is never changed again.
const (
	StatusQueued    Status = "queued"
	StatusDeferred  Status = "deferred"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusTimedOut  Status = "timed_out"
	StatusCancelled Status = "cancelled"
	StatusErrored   Status = "errored"
	StatusExpired   Status = "expired"
	// StatusSkipped records a request that was accepted but deliberately not
	// built: an unmanaged ref, an unknown project, a duplicate delivery.
	StatusSkipped Status = "skipped"
	// StatusSuperseded records a request that a newer request for its lock
	// key made unnecessary (Record.Supersede).
	StatusSuperseded Status = "superseded"
)

// Final reports whether s is one of the final statuses; an unknown status
// is not final.
func (s Status) Final() bool { return s.Valid() && s.Rank() == 2 }

// Rank orders statuses for conditional writes: waiting (0) < running (1) <
// final (2). A record may move to an equal or higher rank, never lower, and
// never away from a final status.
func (s Status) Rank() int {
	switch s {
	case StatusQueued, StatusDeferred:
		return 0
	case StatusRunning:
		return 1
	default:
		return 2
	}
}

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	switch s {
	case StatusQueued, StatusDeferred, StatusRunning, StatusSucceeded, StatusFailed,
		StatusTimedOut, StatusCancelled, StatusErrored, StatusExpired, StatusSkipped,
		StatusSuperseded:
		return true
	}
	return false
}

// Record is what Decap remembers of one build.
//
// Its status, times, reason, NextAttemptAt, CancelRequestedAt, exit code,
// Pod name and object keys change only through its transitions (record.go),
// which refuse, with an error wrapping ErrConflict, every move this state
// machine does not have; a final record never changes again:
//
//	from                       transition      to
//	(a request)                RecordFor       queued
//	queued, deferred           Defer           deferred (reason, NextAttemptAt)
//	queued, deferred           Start           running (deferral fields cleared)
//	queued, deferred           Cancel          cancelled
//	queued, deferred           Supersede       superseded
//	queued, deferred           Drop            skipped, expired or errored
//	queued, deferred           Launching       the same, LaunchingAt set
//	running                    RequestCancel   running, CancelRequestedAt set
//	running                    RequestSupersede running, CancelRequestedAt and
//	                                           SupersededBy set
//	queued, deferred, running  End             the executor's final status
//
// End takes a build's Outcome: from a waiting record too, since a build may
// run while its record still says queued (its dispatcher died between the
// launch and the running record). A running record with a cancel request
// ends cancelled whatever the executor saw of the stop, unless the build
// succeeded first. Tests and storage adapters may build records by hand;
// services never set these fields themselves.
type Record struct {
	BuildID ID `json:"id"`
	// Number is the build's number in its project (#42): the record store
	// gives each record it creates the project's next number, once, and
	// keeps it on every later Save whatever the saved value says (see
	// Records.Save). Numbers are unique per project and increase, with
	// possible gaps; 0 means a record made before builds had numbers.
	Number int `json:"number,omitempty"`
	// RebuildOf is the build this one rebuilds (POST
	// /api/v1/builds/{id}/rebuild): the same project, ref and SHA again.
	RebuildOf     ID        `json:"rebuildOf,omitempty"`
	Team          string    `json:"team"`
	Project       string    `json:"project"`
	Ref           string    `json:"ref"`
	RefType       RefType   `json:"refType"`
	SHA           string    `json:"sha,omitempty"`
	Trigger       Trigger   `json:"trigger"`
	RequestedBy   string    `json:"requestedBy,omitempty"`
	DeliveryID    string    `json:"deliveryId,omitempty"`
	Status        Status    `json:"status"`
	ExitCode      *int      `json:"exitCode,omitempty"`
	QueuedAt      time.Time `json:"queuedAt"`
	StartedAt     time.Time `json:"startedAt,omitzero"`
	FinishedAt    time.Time `json:"finishedAt,omitzero"`
	LogKey        string    `json:"logKey,omitempty"`
	ArtifactsKey  string    `json:"artifactsKey,omitempty"`
	PodName       string    `json:"podName,omitempty"`
	CatalogCommit string    `json:"catalogCommit,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	// NextAttemptAt is when a deferred request is tried again.
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// CancelRequestedAt is when someone asked to cancel the running build,
	// for an executor whose builds the asker cannot stop itself (ingest may
	// not delete build Pods): the reaper stops it and records it cancelled.
	CancelRequestedAt time.Time `json:"cancelRequestedAt,omitzero"`

	// PullRequest is the pull request a build of ref type Pull builds
	// (Request.PullRequest); nil for branches and tags.
	PullRequest *PullRequest `json:"pullRequest,omitempty"`

	// Attempt numbers the tries of one request: 1 for the first (0 in a
	// record made before retries existed, see AttemptNumber), n+1 for the
	// retry of attempt n, which RetryOf names. Each attempt is a build of
	// its own (NextAttempt).
	Attempt int `json:"attempt,omitempty"`
	RetryOf ID  `json:"retryOf,omitempty"`
	// Infra names the infrastructure failure that ended an errored build
	// (End sets it, see EndedByInfra); empty for every other end.
	Infra InfraCause `json:"infra,omitempty"`
	// SupersededBy is the newer request of the lock key that superseded
	// this one: set with a waiting request's end (Supersede) or a running
	// build's stop request (RequestSupersede).
	SupersededBy ID `json:"supersededBy,omitempty"`
	// LaunchingAt is when a dispatcher decided to launch the waiting
	// request (Launching), before it started it: from then on a newer
	// request no longer ends it as a waiting one (Records.EndWaiting), so
	// a launch never races a supersede.
	LaunchingAt time.Time `json:"launchingAt,omitzero"`
	// InfraRetries and Supersedable are what the project's descriptor said
	// about the build when it was launched: how many infrastructure
	// failures may start another attempt (retries.infra, capped by the
	// operator), and whether a newer request of its lock key supersedes
	// it (supersede applied to its ref), so that a failure is not retried
	// when a newer request was accepted meanwhile.
	InfraRetries int  `json:"infraRetries,omitempty"`
	Supersedable bool `json:"supersedable,omitempty"`
	// Secrets names the secrets the build was given (never their values),
	// sorted; SecretsWithheld says why it was given fewer than its
	// project.json wants, or none (GrantSecrets). Both are set with the
	// launch claim and kept like it (KeepClaim).
	Secrets         []string `json:"secrets,omitempty"`
	SecretsWithheld string   `json:"secretsWithheld,omitempty"`
}

// AttemptNumber returns the record's attempt, counting from 1.
func (r Record) AttemptNumber() int { return max(r.Attempt, 1) }

// Waiting reports whether the request waits to be started: queued or
// deferred.
func (r Record) Waiting() bool { return r.Status == StatusQueued || r.Status == StatusDeferred }

// Older reports whether r was accepted before o: by QueuedAt, then by
// BuildID. It orders a lock key's requests for supersede: a newer request
// supersedes the older ones, never the other way round, so that two
// requests accepted at once never end each other.
func (r Record) Older(o Record) bool {
	if !r.QueuedAt.Equal(o.QueuedAt) {
		return r.QueuedAt.Before(o.QueuedAt)
	}
	return r.BuildID < o.BuildID
}

// ProjectKey returns "team/project".
func (r Record) ProjectKey() string { return ProjectKey(r.Team, r.Project) }

// LockKey returns "team/project/ref".
func (r Record) LockKey() string { return LockKey(r.Team, r.Project, r.Ref) }

// Duration is FinishedAt-StartedAt for a build that ran, else zero.
func (r Record) Duration() time.Duration {
	if r.StartedAt.IsZero() || r.FinishedAt.IsZero() {
		return 0
	}
	return r.FinishedAt.Sub(r.StartedAt)
}

// RecordFor returns the queued record of a request.
func RecordFor(req Request) Record {
	return Record{
		BuildID:     req.BuildID,
		Team:        req.Team,
		Project:     req.Project,
		Ref:         req.Ref,
		RefType:     req.RefType,
		SHA:         req.SHA,
		Trigger:     req.Trigger,
		RequestedBy: req.RequestedBy,
		DeliveryID:  req.DeliveryID,
		RebuildOf:   req.RebuildOf,
		PullRequest: clonePull(req.PullRequest),
		Status:      StatusQueued,
		QueuedAt:    req.RequestedAt,
	}
}

// LogKey is the object key of a build's console log.
func LogKey(id ID) string { return "logs/" + string(id) + "/console.log.gz" }

// ArtifactsKey is the object key of a build's artifacts tarball.
func ArtifactsKey(id ID) string { return "artifacts/" + string(id) + "/artifacts.tar.gz" }

// MaxObjectKeyLen bounds an object key, like S3's 1024-byte limit.
const MaxObjectKeyLen = 1024

// ValidateObjectKey checks an object key: a relative slash-separated path such as
// "logs/<id>/console.log.gz" with no empty, "." or ".." segment, no
// backslash or control character, at most MaxObjectKeyLen bytes. It returns a
// ErrInvalid error that says why.
func ValidateObjectKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: object key is empty", ErrInvalid)
	case len(key) > MaxObjectKeyLen:
		return fmt.Errorf("%w: object key is longer than %d bytes", ErrInvalid, MaxObjectKeyLen)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w: object key %q is absolute", ErrInvalid, key)
	case strings.Contains(key, `\`):
		return fmt.Errorf("%w: object key %q contains a backslash", ErrInvalid, key)
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: object key %q contains a control character", ErrInvalid, key)
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: object key %q has an empty segment", ErrInvalid, key)
		case ".", "..":
			return fmt.Errorf("%w: object key %q has a %q segment", ErrInvalid, key, seg)
		}
	}
	return nil
}
