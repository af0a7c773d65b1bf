package build

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Pull requests (DESIGN.md "Pull requests"): a pull request's build has
// ref "pull/<N>", ref type Pull, lock key "team/project/pull/<N>", and
// carries the pull request's fields in Request.PullRequest and
// Record.PullRequest.

// Pull is the ref type of a pull request's build.
const Pull RefType = "pull"

// TriggerPullRequest is the trigger of a build a pull request's event
// asked for: opened, pushed to, ready for review, approved, /retest.
const TriggerPullRequest Trigger = "pull_request"

// pullRefPrefix starts the ref of every pull request build.
const pullRefPrefix = "pull/"

// MaxPullNumber bounds a pull request's number (GitHub's are int32).
const MaxPullNumber = 1<<31 - 1

// PullRef returns the ref of pull request n's builds, "pull/<n>".
func PullRef(n int) string { return pullRefPrefix + strconv.Itoa(n) }

// PullNumber returns n when ref is "pull/<n>" for a pull request number n
// (decimal, no leading zero), and false otherwise. Such refs are the pull
// requests' alone: no branch or tag request may have one (Request.Validate),
// so a branch named "pull/7" never shares pull request 7's lock key.
func PullNumber(ref string) (int, bool) {
	digits, ok := strings.CutPrefix(ref, pullRefPrefix)
	if !ok || digits == "" || len(digits) > 10 || digits[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n > MaxPullNumber {
		return 0, false
	}
	return n, true
}

// PullRequest is the pull request a build builds: the queue message's
// additive "pullRequest" object (still message version 1), kept on the
// build's record. A build of a pull request checks out HeadSHA, which
// GitHub also serves as refs/pull/<Number>/head of the base repository.
type PullRequest struct {
	Number int `json:"number"`
	// BaseRef is the branch the pull request merges into; HeadRef the
	// branch it comes from, in HeadRepo ("owner/name"; the base
	// repository itself unless the pull request comes from a fork, and
	// empty when the fork was deleted).
	BaseRef  string `json:"baseRef"`
	HeadRef  string `json:"headRef"`
	HeadRepo string `json:"headRepo,omitempty"`
	HeadSHA  string `json:"headSha"`
	// Trusted is true only for a pull request from the base repository
	// itself by an author GitHub calls OWNER, MEMBER or COLLABORATOR. An
	// untrusted one is built only when its project builds such pull
	// requests (forks "always", or "approval" and ApprovedBy approved its
	// head), and gets no secrets: an approval makes it built, not trusted.
	Trusted bool `json:"trusted"`
	// ApprovedBy is the trusted person whose /ok-to-test comment or
	// ok-to-test label let this untrusted head be built, if one did.
	ApprovedBy string `json:"approvedBy,omitempty"`
}

// Ref returns the ref of the pull request's builds, "pull/<Number>".
func (p PullRequest) Ref() string { return PullRef(p.Number) }

// GitRef returns the ref of the base repository that holds the pull
// request's head commit: "refs/pull/<Number>/head".
func (p PullRequest) GitRef() string { return "refs/pull/" + strconv.Itoa(p.Number) + "/head" }

// Validate checks every field: a number in 1..MaxPullNumber, branch names
// as ValidateRef wants them, the head repository as "owner/name" of valid
// names (or empty), a hex head SHA, and an approver of at most 256 bytes.
func (p PullRequest) Validate() error {
	if p.Number < 1 || p.Number > MaxPullNumber {
		return fmt.Errorf("%w: pullRequest.number %d is not a pull request number", ErrInvalid, p.Number)
	}
	if err := ValidateRef(p.BaseRef); err != nil {
		return fmt.Errorf("pullRequest.baseRef: %w", err)
	}
	if err := ValidateRef(p.HeadRef); err != nil {
		return fmt.Errorf("pullRequest.headRef: %w", err)
	}
	if p.HeadRepo != "" {
		if err := validateRepo(p.HeadRepo); err != nil {
			return fmt.Errorf("pullRequest.headRepo: %w", err)
		}
	}
	if !isHex(p.HeadSHA, 7, 64) {
		return fmt.Errorf("%w: pullRequest.headSha %q is not a hex commit id", ErrInvalid, truncate(p.HeadSHA, 80))
	}
	if len(p.ApprovedBy) > 256 || !utf8.ValidString(p.ApprovedBy) {
		return fmt.Errorf("%w: pullRequest.approvedBy is longer than 256 bytes or not UTF-8", ErrInvalid)
	}
	if p.Trusted && p.ApprovedBy != "" {
		return fmt.Errorf("%w: pullRequest is trusted and approved at once (only an untrusted pull request is approved)", ErrInvalid)
	}
	return nil
}

// The variables a pull request's build gets (PullRequest.Env), in order.
const (
	EnvPullNumber   = "PULL_REQUEST_NUMBER"
	EnvPullBaseRef  = "PULL_REQUEST_BASE_REF"
	EnvPullHeadRef  = "PULL_REQUEST_HEAD_REF"
	EnvPullHeadRepo = "PULL_REQUEST_HEAD_REPO"
	EnvPullTrusted  = "PULL_REQUEST_TRUSTED"
	// EnvPullRef names the ref of the base repository to fetch the head
	// from: "refs/pull/<N>/head" (GitRef).
	EnvPullRef = "PULL_REQUEST_REF"
)

// PullRequestEnvNames are the names PullRequest.Env sets. A build's
// environment has them only from its request: the entrypoint drops any of
// them from the environment it was given.
var PullRequestEnvNames = []string{EnvPullNumber, EnvPullBaseRef, EnvPullHeadRef, EnvPullHeadRepo, EnvPullTrusted, EnvPullRef}

// Env returns the variables of the pull request's build: its number,
// base and head branches, head repository, whether it is trusted ("true"
// or "false") and the ref to fetch its head from.
func (p PullRequest) Env() []EnvVar {
	return []EnvVar{
		{Name: EnvPullNumber, Value: strconv.Itoa(p.Number)},
		{Name: EnvPullBaseRef, Value: p.BaseRef},
		{Name: EnvPullHeadRef, Value: p.HeadRef},
		{Name: EnvPullHeadRepo, Value: p.HeadRepo},
		{Name: EnvPullTrusted, Value: strconv.FormatBool(p.Trusted)},
		{Name: EnvPullRef, Value: p.GitRef()},
	}
}

// PullRequestFromEnv reads back what Env wrote, with sha the build's
// COMMIT_SHA: nil when PULL_REQUEST_NUMBER is not set (not a pull
// request's build), an ErrInvalid error when what is set is not a valid
// pull request.
func PullRequestFromEnv(getenv func(string) string, sha string) (*PullRequest, error) {
	num := getenv(EnvPullNumber)
	if num == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q is not a number", ErrInvalid, EnvPullNumber, truncate(num, 20))
	}
	trusted, err := strconv.ParseBool(getenv(EnvPullTrusted))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not true or false", ErrInvalid, EnvPullTrusted)
	}
	p := &PullRequest{Number: n, BaseRef: getenv(EnvPullBaseRef), HeadRef: getenv(EnvPullHeadRef),
		HeadRepo: getenv(EnvPullHeadRepo), HeadSHA: sha, Trusted: trusted}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// validateRepo checks "owner/name".
func validateRepo(s string) error {
	owner, name, ok := strings.Cut(s, "/")
	if !ok {
		return fmt.Errorf("%w: %q is not owner/name", ErrInvalid, truncate(s, 100))
	}
	if err := ValidateName("owner", owner); err != nil {
		return err
	}
	return ValidateName("name", name)
}

// validatePull checks what a request's ref type asks of its pull request
// fields: a Pull request has a valid PullRequest whose ref and head SHA are
// the request's own; any other request has none, and no pull request's
// ref. Its trigger fits its ref type.
func (r Request) validatePull() error {
	if r.RefType != Pull {
		if r.PullRequest != nil {
			return fmt.Errorf("%w: a %s request has no pullRequest (refType %q is for pull requests)", ErrInvalid, r.RefType, Pull)
		}
		if n, ok := PullNumber(r.Ref); ok {
			return fmt.Errorf("%w: ref %q is pull request %d's: a %s may not have it", ErrInvalid, r.Ref, n, r.RefType)
		}
		if r.Trigger == TriggerPullRequest {
			return fmt.Errorf("%w: trigger %q is only for pull request builds", ErrInvalid, r.Trigger)
		}
		return nil
	}
	if r.PullRequest == nil {
		return fmt.Errorf("%w: refType %q needs a pullRequest object", ErrInvalid, Pull)
	}
	if err := r.PullRequest.Validate(); err != nil {
		return err
	}
	if want := r.PullRequest.Ref(); r.Ref != want {
		return fmt.Errorf("%w: ref %q of a pull request build must be %q (pullRequest.number %d)", ErrInvalid, truncate(r.Ref, 100), want, r.PullRequest.Number)
	}
	if r.SHA != r.PullRequest.HeadSHA {
		return fmt.Errorf("%w: sha %q of a pull request build must be its pullRequest.headSha %q", ErrInvalid, truncate(r.SHA, 80), truncate(r.PullRequest.HeadSHA, 80))
	}
	return nil
}

// Untrusted reports whether the request builds code nobody trusted Decap
// to run with secrets: a pull request's build that is not Trusted (from a
// fork, or by an author who is not OWNER, MEMBER or COLLABORATOR), whether
// or not somebody approved building it. A pull request build without its
// pullRequest object is untrusted too (Validate refuses it anyway).
// Branch and tag builds are trusted: whoever pushes to the repository is.
func (r Request) Untrusted() bool {
	return r.RefType == Pull && (r.PullRequest == nil || !r.PullRequest.Trusted)
}

// Untrusted reports of a record what Request.Untrusted does of its
// request.
func (r Record) Untrusted() bool {
	return r.RefType == Pull && (r.PullRequest == nil || !r.PullRequest.Trusted)
}

// clonePull returns a copy of *p, so that a record and its request never
// share one.
func clonePull(p *PullRequest) *PullRequest {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// TrustedAssociation reports whether a GitHub author_association is one
// whose pull requests (from the base repository) and approvals Decap
// trusts: OWNER, MEMBER or COLLABORATOR. CONTRIBUTOR (merged a pull
// request once), FIRST_TIMER, FIRST_TIME_CONTRIBUTOR, MANNEQUIN and NONE
// are not.
func TrustedAssociation(a string) bool {
	switch a {
	case "OWNER", "MEMBER", "COLLABORATOR":
		return true
	}
	return false
}

// Forks policies of project.json's pullRequests.forks: what Decap does
// with an untrusted pull request.
const (
	ForksNever    = "never"    // never built
	ForksApproval = "approval" // built once a trusted person approved its head (the default)
	ForksAlways   = "always"   // built at once, untrusted
)

// PullRequestPolicy is project.json's "pullRequests": the project's pull
// requests are built when it is present and their base branch matches
// BaseRefRegex (anchored like managedRefRegex; empty matches every
// branch). Forks says what happens to an untrusted pull request (ForksNever,
// ForksApproval when empty, ForksAlways).
type PullRequestPolicy struct {
	BaseRefRegex string `json:"baseRefRegex,omitempty"`
	Forks        string `json:"forks,omitempty"`

	baseRef *regexp.Regexp
}

// validate compiles the regex and checks forks.
func (p *PullRequestPolicy) validate() error {
	switch p.Forks {
	case "", ForksNever, ForksApproval, ForksAlways:
	default:
		return fmt.Errorf("pullRequests.forks %q is not %q, %q or %q", truncate(p.Forks, 40), ForksNever, ForksApproval, ForksAlways)
	}
	if p.BaseRefRegex != "" {
		re, err := compileRefRegex("pullRequests.baseRefRegex", p.BaseRefRegex)
		if err != nil {
			return err
		}
		p.baseRef = re
	}
	return nil
}

// BuildsPullRequestsInto reports whether the project builds pull requests
// whose base branch is baseRef: it has "pullRequests", and the whole of
// baseRef matches its baseRefRegex (or it has none). A hand-built
// descriptor's regex is compiled now, with the same limits; one that does
// not compile matches nothing.
func (d Descriptor) BuildsPullRequestsInto(baseRef string) bool {
	p := d.PullRequests
	if p == nil {
		return false
	}
	if p.BaseRefRegex == "" {
		return true
	}
	re := p.baseRef
	if re == nil {
		var err error
		if re, err = compileRefRegex("pullRequests.baseRefRegex", p.BaseRefRegex); err != nil {
			return false
		}
	}
	return re.MatchString(baseRef)
}

// ForkPolicy returns pullRequests.forks, ForksApproval when it is not set,
// and ForksNever when the project builds no pull requests.
func (d Descriptor) ForkPolicy() string {
	switch {
	case d.PullRequests == nil:
		return ForksNever
	case d.PullRequests.Forks == "":
		return ForksApproval
	}
	return d.PullRequests.Forks
}

// PullState says what Decap does with a pull request's head.
type PullState string

// Pull request states.
const (
	// PullBuilding: the head was queued to build (PullRequestState.Build).
	PullBuilding PullState = "building"
	// PullWaiting: the head is untrusted and waits for a trusted person's
	// /ok-to-test comment or ok-to-test label.
	PullWaiting PullState = "waiting"
	// PullDraft: a draft is built once it is marked ready for review.
	PullDraft PullState = "draft"
	// PullIgnored: the head is not built (PullRequestState.Reason says
	// why: its base branch, forks "never").
	PullIgnored PullState = "ignored"
	// PullClosed: closed or merged; its builds were cancelled.
	PullClosed PullState = "closed"
)

// ReasonWaitingForApproval is the reason and commit status of a head that
// waits for approval.
const ReasonWaitingForApproval = "pending: waiting for approval"

// PullRequestState is what Decap knows of one pull request, from the
// events GitHub sent it: one entry per pull request in the PullRequests
// store, kept while it is open and after (Closed).
type PullRequestState struct {
	Team    string `json:"team"`
	Project string `json:"project"`
	Number  int    `json:"number"`
	Title   string `json:"title,omitempty"`
	// Author is the pull request's author, AuthorAssociation what GitHub
	// said of their relation to the base repository in the latest event.
	Author            string `json:"author,omitempty"`
	AuthorAssociation string `json:"authorAssociation,omitempty"`
	BaseRef           string `json:"baseRef"`
	HeadRef           string `json:"headRef"`
	HeadRepo          string `json:"headRepo,omitempty"`
	HeadSHA           string `json:"headSha"`
	// HeadAt is when GitHub last updated the pull request in the event
	// that set HeadSHA: an approval written before it approves an older
	// head, never this one.
	HeadAt  time.Time `json:"headAt"`
	Draft   bool      `json:"draft,omitempty"`
	Closed  bool      `json:"closed,omitempty"`
	Trusted bool      `json:"trusted"`
	// ApprovedSHA is the head a trusted person approved (ApprovedBy, at
	// ApprovedAt): building is approved for that commit only.
	ApprovedSHA string    `json:"approvedSha,omitempty"`
	ApprovedBy  string    `json:"approvedBy,omitempty"`
	ApprovedAt  time.Time `json:"approvedAt,omitzero"`
	// State is what Decap does with HeadSHA, Reason why when it waits or
	// is ignored, Build the latest build queued for the pull request.
	State  PullState `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Build  ID        `json:"build,omitempty"`
	// EventAt is the pull request's updated_at in the newest event
	// applied: an event older than it changes nothing (GitHub may deliver
	// events out of order).
	EventAt time.Time `json:"eventAt"`
	// Version counts the entry's writes: Put stores version n+1 only over
	// version n (a compare-and-swap).
	Version int64 `json:"version"`
}

// LockKey returns the lock key of the pull request's builds,
// "team/project/pull/<N>".
func (p PullRequestState) LockKey() string { return LockKey(p.Team, p.Project, PullRef(p.Number)) }

// Fork reports whether the head comes from another repository than the
// base (or from a deleted fork).
func (p PullRequestState) Fork() bool {
	return !strings.EqualFold(p.HeadRepo, ProjectKey(p.Team, p.Project))
}

// MaxPullTitle bounds a stored pull request's title, in bytes.
const MaxPullTitle = 256

// Validate checks an entry as every PullRequests store requires: valid
// team, project and number, the branch and head fields as PullRequest
// wants them, a known state, a title of at most MaxPullTitle bytes of
// UTF-8, and a version of at least 1.
func (p PullRequestState) Validate() error {
	if err := ValidateName("team", p.Team); err != nil {
		return err
	}
	if err := ValidateName("project", p.Project); err != nil {
		return err
	}
	pr := PullRequest{Number: p.Number, BaseRef: p.BaseRef, HeadRef: p.HeadRef, HeadRepo: p.HeadRepo, HeadSHA: p.HeadSHA}
	if err := pr.Validate(); err != nil {
		return err
	}
	switch p.State {
	case PullBuilding, PullWaiting, PullDraft, PullIgnored, PullClosed:
	default:
		return fmt.Errorf("%w: pull request state %q is not known", ErrInvalid, truncate(string(p.State), 40))
	}
	if len(p.Title) > MaxPullTitle || !utf8.ValidString(p.Title) {
		return fmt.Errorf("%w: pull request title is longer than %d bytes or not UTF-8", ErrInvalid, MaxPullTitle)
	}
	if len(p.Author) > 256 || len(p.ApprovedBy) > 256 || len(p.AuthorAssociation) > 64 || len(p.Reason) > 1024 {
		return fmt.Errorf("%w: pull request author, approver, association or reason is too long", ErrInvalid)
	}
	if p.Version < 1 {
		return fmt.Errorf("%w: pull request version %d is less than 1", ErrInvalid, p.Version)
	}
	return nil
}

// PullRequests stores the PullRequestState of pull requests, shared by
// every ingest replica.
type PullRequests interface {
	// Get returns the pull request's entry; ErrNotFound when Decap never
	// stored one.
	Get(ctx context.Context, team, project string, number int) (PullRequestState, error)
	// Put stores p when the stored entry's Version is p.Version-1, or
	// when none is stored and p.Version is 1: a compare-and-swap, so two
	// events of one pull request never lose each other's change.
	// ErrConflict, and nothing changes, otherwise; ErrInvalid for an
	// entry Validate refuses.
	Put(ctx context.Context, p PullRequestState) error
	// ListOpen returns the project's pull requests that are not Closed,
	// by number.
	ListOpen(ctx context.Context, team, project string) ([]PullRequestState, error)
}
