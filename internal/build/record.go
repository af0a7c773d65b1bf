package build

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The transitions of a build record: the only way its status, times,
// reason, deferral, cancel request, exit code, Pod name and object keys
// change. The state machine is in Record's comment. Each transition either
// changes the record as its comment says and returns nil, or returns an
// error and leaves the record as it was: ErrConflict when the record's
// status forbids the move (the message names the build, its status and
// the move), ErrInvalid when an argument is unusable.

// Reasons the transitions write.
const (
	// ReasonCancelledOnRequest starts the reason of a running build that was
	// stopped because someone asked (RequestCancel).
	ReasonCancelledOnRequest = "cancelled on request"
	// ReasonSupersededBy starts the reason of a superseded request or
	// build; the newer request's build ID follows.
	ReasonSupersededBy = "superseded by "
	// ReasonStoppedFromOutside starts the reason of a build that was
	// stopped while nobody had asked Decap to cancel it: an infrastructure
	// failure (see EndedByInfra).
	ReasonStoppedFromOutside = "stopped from outside Decap, with no cancel asked for"
	// The notes End adds to the reason when a build reported an object key
	// that is not its own.
	reasonForeignLogKey       = "the build reported a log key that is not its own; no log recorded"
	reasonForeignArtifactsKey = "the build reported an artifacts key that is not its own; no artifacts recorded"
)

// The statuses each transition starts from.
var (
	waiting          = []Status{StatusQueued, StatusDeferred}
	waitingOrRunning = []Status{StatusQueued, StatusDeferred, StatusRunning}
)

// RecordForOutcome returns the queued record of a build known only from
// its Outcome: one whose dispatcher launched it and died before its first
// record write. The request's details that the outcome does not carry stay
// empty; the ref is taken for a branch. End it with End.
func RecordForOutcome(o Outcome) Record {
	r := Record{BuildID: o.BuildID, Team: o.Team, Project: o.Project, Ref: o.Ref,
		RefType: Branch, Status: StatusQueued, QueuedAt: o.BuildID.Time()}
	if r.QueuedAt.IsZero() {
		r.QueuedAt = o.StartedAt
	}
	return r
}

// Defer records that a waiting request will be tried again at next, and
// why it waits: queued or deferred → deferred.
func (r *Record) Defer(now, next time.Time, reason string) error {
	if err := r.may("defer", waiting); err != nil {
		return err
	}
	if reason == "" {
		return fmt.Errorf("%w: defer build %s without a reason", ErrInvalid, r.BuildID)
	}
	r.Status, r.Reason, r.NextAttemptAt = StatusDeferred, reason, next
	return nil
}

// Start records that the build was launched at now as Pod (or process)
// podName from the build scripts at catalogCommit: queued or deferred →
// running. The deferral's reason and next attempt are cleared.
func (r *Record) Start(now time.Time, podName, catalogCommit string) error {
	if err := r.may("start", waiting); err != nil {
		return err
	}
	r.Status, r.StartedAt = StatusRunning, now
	r.PodName, r.CatalogCommit = podName, catalogCommit
	r.Reason, r.NextAttemptAt = "", time.Time{}
	return nil
}

// Cancel records that by (a person or "api") cancelled the request before
// it started: queued or deferred → cancelled. A running build is cancelled
// with RequestCancel.
func (r *Record) Cancel(now time.Time, by string) error {
	if err := r.may("cancel", waiting); err != nil {
		return err
	}
	r.finish(StatusCancelled, "cancelled by "+by, now)
	return nil
}

// RequestCancel records that someone asked at now to stop the running
// build; it stays running until its executor reports the end, which End
// then records as cancelled. Asking again keeps the first request's time.
// A waiting build is cancelled with Cancel.
func (r *Record) RequestCancel(now time.Time) error {
	if err := r.may("request a cancel", []Status{StatusRunning}); err != nil {
		return err
	}
	if r.CancelRequestedAt.IsZero() {
		r.CancelRequestedAt = now
	}
	return nil
}

// Supersede records that the newer request by made this waiting one
// unnecessary: queued or deferred → superseded, with by in the reason.
func (r *Record) Supersede(now time.Time, by ID) error {
	if err := r.may("supersede", waiting); err != nil {
		return err
	}
	if by == "" || by == r.BuildID {
		return fmt.Errorf("%w: build %s cannot be superseded by %q", ErrInvalid, r.BuildID, by)
	}
	r.finish(StatusSuperseded, ReasonSupersededBy+string(by), now)
	r.SupersededBy = by
	return nil
}

// RequestSupersede records that the newer request by made the running
// build unnecessary and asked at now to stop it: it stays running until
// its executor reports the end, which End then records as superseded
// (never retried). The reaper stops it as it stops a build someone asked
// to cancel (CancelRequestedAt). A cancel someone asked for first stands:
// the build then ends cancelled and nothing changes here; asking again
// keeps the first request.
func (r *Record) RequestSupersede(now time.Time, by ID) error {
	if err := r.may("request a supersede", []Status{StatusRunning}); err != nil {
		return err
	}
	if by == "" || by == r.BuildID {
		return fmt.Errorf("%w: build %s cannot be superseded by %q", ErrInvalid, r.BuildID, by)
	}
	if !r.CancelRequestedAt.IsZero() {
		return nil
	}
	r.CancelRequestedAt, r.SupersededBy = now, by
	return nil
}

// Launching records that a dispatcher decided at now to launch the
// waiting request, and what the project's descriptor says about it then:
// infraRetries (retries.infra, capped by the operator) and supersedable
// (whether a newer request of its lock key supersedes it). It stays
// queued or deferred until Start; from now on a newer request does not end
// it as a waiting one (Records.EndWaiting refuses), so a supersede never
// ends a request whose build is being started. A later Launching (a
// redelivered request) keeps the first time.
func (r *Record) Launching(now time.Time, infraRetries int, supersedable bool) error {
	if err := r.may("launch", waiting); err != nil {
		return err
	}
	if infraRetries < 0 {
		return fmt.Errorf("%w: build %s cannot have %d retries", ErrInvalid, r.BuildID, infraRetries)
	}
	if r.LaunchingAt.IsZero() {
		r.LaunchingAt = now
	}
	r.InfraRetries, r.Supersedable = infraRetries, supersedable
	return nil
}

// Clone returns r with nothing shared with it (the exit code, the pull
// request and the secrets' names copied).
func (r Record) Clone() Record {
	if r.ExitCode != nil {
		c := *r.ExitCode
		r.ExitCode = &c
	}
	if r.PullRequest != nil {
		p := *r.PullRequest
		r.PullRequest = &p
	}
	r.Secrets = slices.Clone(r.Secrets)
	return r
}

// KeepClaim gives r, about to replace the stored record, the stored launch
// claim (LaunchingAt, InfraRetries, Supersedable) when r has none: a
// writer that read the request before a dispatcher claimed it (a second
// dispatcher given the same message, a second reaper recording the same
// retry) must not take the claim away, or a newer request could end the
// request as a waiting one while its build starts. Records.Save does
// this; no writer takes a claim back.
func (r *Record) KeepClaim(stored Record) {
	if r.LaunchingAt.IsZero() {
		r.LaunchingAt, r.InfraRetries, r.Supersedable = stored.LaunchingAt, stored.InfraRetries, stored.Supersedable
		r.Secrets, r.SecretsWithheld = stored.Secrets, stored.SecretsWithheld
	}
}

// GrantSecrets records which secrets the build is given: names (sorted
// and without repeats; their values are never recorded), and, when it is
// given fewer than it wants or none, withheld, the reason. Queued or
// deferred only: it is written with the launch claim (Launching), before
// the build starts.
func (r *Record) GrantSecrets(names []string, withheld string) error {
	if err := r.may("grant secrets to", waiting); err != nil {
		return err
	}
	for _, n := range names {
		if err := ValidateSecretName(n); err != nil {
			return fmt.Errorf("grant secrets to build %s: %w", r.BuildID, err)
		}
	}
	names = slices.Clone(names)
	slices.Sort(names)
	r.Secrets, r.SecretsWithheld = slices.Compact(names), withheld
	if len(r.Secrets) == 0 {
		r.Secrets = nil
	}
	return nil
}

// Drop records that a waiting request will not be built, and why: queued
// or deferred → skipped (nothing to build: an unmanaged ref, an unknown
// project, a duplicate delivery), expired (waited too long) or errored (it
// can never be built: an invalid project.json, a Pod the cluster rejects).
// Any other status is ErrInvalid, as is an empty reason.
func (r *Record) Drop(status Status, reason string, now time.Time) error {
	if err := r.may("drop", waiting); err != nil {
		return err
	}
	switch {
	case status != StatusSkipped && status != StatusExpired && status != StatusErrored:
		return fmt.Errorf("%w: build %s cannot be dropped as %q (want skipped, expired or errored)", ErrInvalid, r.BuildID, status)
	case reason == "":
		return fmt.Errorf("%w: drop build %s without a reason", ErrInvalid, r.BuildID)
	}
	r.finish(status, reason, now)
	return nil
}

// endStatuses are the statuses an executor reports a build run ended with.
var endStatuses = []Status{StatusSucceeded, StatusFailed, StatusTimedOut, StatusCancelled, StatusErrored}

// End records how the build ended, as its executor observed it: queued,
// deferred or running → o.Status (one of succeeded, failed, timed_out,
// cancelled, errored; another is ErrInvalid, as is an outcome of another
// build).
//
// A build with a cancel request (RequestCancel) that did not succeed ends
// cancelled, its reason starting with "cancelled on request"; one stopped
// because a newer request superseded it (RequestSupersede) ends superseded,
// its reason starting with "superseded by" and the newer build; a build the
// executor saw stopped (cancelled) while nobody asked for it ends errored,
// its reason starting with ReasonStoppedFromOutside: only a cancel someone
// asked for is recorded as cancelled. Any other outcome with an
// infrastructure cause (o.Infra) that did not succeed ends errored, whatever
// status the executor gave it (see EndedByInfra). The exit
// code, reason and Pod name come from o; the times too, FinishedAt being
// now when o does not know it and StartedAt FinishedAt when nobody knows
// it. The object keys are never taken on trust: o's log and artifacts keys
// are recorded only when they are this build's (LogKey, ArtifactsKey), so
// a build cannot point its record at another build's objects; a foreign
// key is left out and the reason says so.
func (r *Record) End(o Outcome, now time.Time) error {
	if err := r.may("end", waitingOrRunning); err != nil {
		return err
	}
	switch {
	case o.BuildID != r.BuildID:
		return fmt.Errorf("%w: outcome of build %s given to build %s", ErrInvalid, o.BuildID, r.BuildID)
	case !slices.Contains(endStatuses, o.Status):
		return fmt.Errorf("%w: build %s cannot end with status %q", ErrInvalid, r.BuildID, o.Status)
	}
	status, reasons := o.Status, []string{o.Reason}
	switch {
	case !r.CancelRequestedAt.IsZero() && r.SupersededBy != "" && status != StatusSucceeded:
		// Stopped for a newer request: superseded, never retried.
		if o.Reason == "cancelled" { // the entrypoint's word for the stop
			reasons = nil
		}
		status, reasons = StatusSuperseded, append([]string{ReasonSupersededBy + string(r.SupersededBy)}, reasons...)
	case !r.CancelRequestedAt.IsZero() && status != StatusSucceeded:
		// Stopped on request: whatever the executor saw of the stop (a
		// deleted Pod, a killed script), the build was cancelled.
		if o.Reason == "cancelled" { // the entrypoint's word for it
			reasons = nil
		}
		status, reasons = StatusCancelled, append([]string{ReasonCancelledOnRequest}, reasons...)
	case status == StatusCancelled:
		// Stopped, and nobody asked: a deleted Pod, a signal from outside.
		status, reasons = StatusErrored, []string{ReasonStoppedFromOutside, o.Reason}
	case o.Infra != "" && status != StatusSucceeded:
		// Not the run's own verdict (a script killed from outside).
		status = StatusErrored
	}
	var logKey, artifactsKey string
	switch o.LogKey {
	case "":
	case LogKey(r.BuildID):
		logKey = o.LogKey
	default:
		reasons = append(reasons, reasonForeignLogKey)
	}
	switch o.ArtifactsKey {
	case "":
	case ArtifactsKey(r.BuildID):
		artifactsKey = o.ArtifactsKey
	default:
		reasons = append(reasons, reasonForeignArtifactsKey)
	}

	finished := o.FinishedAt
	if finished.IsZero() {
		finished = now
	}
	r.finish(status, joinReasons(reasons...), finished)
	if !o.StartedAt.IsZero() {
		r.StartedAt = o.StartedAt
	}
	if r.StartedAt.IsZero() {
		r.StartedAt = r.FinishedAt
	}
	r.ExitCode = nil
	if o.ExitCode != nil {
		code := *o.ExitCode
		r.ExitCode = &code
	}
	if o.PodName != "" {
		r.PodName = o.PodName
	}
	r.LogKey, r.ArtifactsKey = logKey, artifactsKey
	r.Infra = r.EndedByInfra(o)
	return nil
}

// finish makes r final: status, reason and finish time, deferral cleared.
func (r *Record) finish(status Status, reason string, now time.Time) {
	r.Status, r.Reason, r.FinishedAt = status, reason, now
	r.NextAttemptAt = time.Time{}
}

// may returns nil if r's status is one of from, else the ErrConflict error
// that refuses move.
func (r *Record) may(move string, from []Status) error {
	if slices.Contains(from, r.Status) {
		return nil
	}
	var is string
	switch {
	case r.Status.Final():
		is = "already " + strings.ReplaceAll(string(r.Status), "_", " ")
	case r.Status.Valid():
		is = "is " + string(r.Status)
	default:
		is = fmt.Sprintf("has status %q", r.Status)
	}
	return fmt.Errorf("%w: build %s %s; cannot %s", ErrConflict, r.BuildID, is, move)
}

// joinReasons joins the non-empty reasons with "; ".
func joinReasons(reasons ...string) string {
	var parts []string
	for _, s := range reasons {
		if s = strings.TrimSpace(s); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}
