// Package api holds the JSON wire types of Decap's HTTP API: what ingest
// answers and reads, and what decapctl (internal/cli) sends and decodes.
// One declaration per answer, so that server and CLI cannot drift apart; golden files (testdata/*.golden.json, and ingest's
// testdata/api/) pin the JSON on the wire.
//
// The vocabulary's own JSON types (build.Lease, build.GateState,
// build.QueueStats, build.RefInfo, build.SecretInfo,
// build.PullRequestState) appear inside these answers as they are: their
// JSON is defined once, in package build, which the stores and the queue
// message share. A build record travels as Build, field for field the
// JSON of build.Record (TestBuildIsTheRecordsJSON).
//
// Field order is the order on the wire: encoding/json writes a struct's
// fields as declared (and a map's keys sorted), so an answer that was a
// map keeps its keys in sorted order here.
package api

import (
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Error is every error answer: {"error": "...", "detail": ...}. Message is
// what echo's own error answers carry instead of Error (a route that does
// not exist on an older server); ingest never writes it.
type Error struct {
	Error   string `json:"error,omitempty"`
	Detail  any    `json:"detail,omitempty"`
	Message string `json:"message,omitempty"`
}

// Text is the error's message, whichever field carries it.
func (e Error) Text() string {
	if e.Error != "" {
		return e.Error
	}
	return e.Message
}

// Build is one build record: GET /api/v1/builds/{id}, the builds of a
// project's history and of GET /api/v1/builds?status=running, and the
// answer of cancelling a waiting build. Its JSON is build.Record's.
type Build struct {
	ID                build.ID           `json:"id"`
	Number            int                `json:"number,omitempty"`
	RebuildOf         build.ID           `json:"rebuildOf,omitempty"`
	Team              string             `json:"team"`
	Project           string             `json:"project"`
	Ref               string             `json:"ref"`
	RefType           build.RefType      `json:"refType"`
	SHA               string             `json:"sha,omitempty"`
	Trigger           build.Trigger      `json:"trigger"`
	RequestedBy       string             `json:"requestedBy,omitempty"`
	DeliveryID        string             `json:"deliveryId,omitempty"`
	Status            build.Status       `json:"status"`
	ExitCode          *int               `json:"exitCode,omitempty"`
	QueuedAt          time.Time          `json:"queuedAt"`
	StartedAt         time.Time          `json:"startedAt,omitzero"`
	FinishedAt        time.Time          `json:"finishedAt,omitzero"`
	LogKey            string             `json:"logKey,omitempty"`
	ArtifactsKey      string             `json:"artifactsKey,omitempty"`
	PodName           string             `json:"podName,omitempty"`
	CatalogCommit     string             `json:"catalogCommit,omitempty"`
	Reason            string             `json:"reason,omitempty"`
	NextAttemptAt     time.Time          `json:"nextAttemptAt,omitzero"`
	CancelRequestedAt time.Time          `json:"cancelRequestedAt,omitzero"`
	PullRequest       *build.PullRequest `json:"pullRequest,omitempty"`
	Attempt           int                `json:"attempt,omitempty"`
	RetryOf           build.ID           `json:"retryOf,omitempty"`
	Infra             build.InfraCause   `json:"infra,omitempty"`
	SupersededBy      build.ID           `json:"supersededBy,omitempty"`
	LaunchingAt       time.Time          `json:"launchingAt,omitzero"`
	InfraRetries      int                `json:"infraRetries,omitempty"`
	Supersedable      bool               `json:"supersedable,omitempty"`
	Secrets           []string           `json:"secrets,omitempty"`
	SecretsWithheld   string             `json:"secretsWithheld,omitempty"`
}

// BuildOf returns r as the API shows it.
func BuildOf(r build.Record) Build {
	return Build{
		ID: r.BuildID, Number: r.Number, RebuildOf: r.RebuildOf, Team: r.Team, Project: r.Project,
		Ref: r.Ref, RefType: r.RefType, SHA: r.SHA, Trigger: r.Trigger, RequestedBy: r.RequestedBy,
		DeliveryID: r.DeliveryID, Status: r.Status, ExitCode: r.ExitCode, QueuedAt: r.QueuedAt,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, LogKey: r.LogKey, ArtifactsKey: r.ArtifactsKey,
		PodName: r.PodName, CatalogCommit: r.CatalogCommit, Reason: r.Reason, NextAttemptAt: r.NextAttemptAt,
		CancelRequestedAt: r.CancelRequestedAt, PullRequest: r.PullRequest, Attempt: r.Attempt,
		RetryOf: r.RetryOf, Infra: r.Infra, SupersededBy: r.SupersededBy, LaunchingAt: r.LaunchingAt,
		InfraRetries: r.InfraRetries, Supersedable: r.Supersedable, Secrets: r.Secrets,
		SecretsWithheld: r.SecretsWithheld,
	}
}

// Record returns b as a build record, for a client that uses the
// record's methods (LockKey, Duration, Status.Final).
func (b Build) Record() build.Record {
	return build.Record{
		BuildID: b.ID, Number: b.Number, RebuildOf: b.RebuildOf, Team: b.Team, Project: b.Project,
		Ref: b.Ref, RefType: b.RefType, SHA: b.SHA, Trigger: b.Trigger, RequestedBy: b.RequestedBy,
		DeliveryID: b.DeliveryID, Status: b.Status, ExitCode: b.ExitCode, QueuedAt: b.QueuedAt,
		StartedAt: b.StartedAt, FinishedAt: b.FinishedAt, LogKey: b.LogKey, ArtifactsKey: b.ArtifactsKey,
		PodName: b.PodName, CatalogCommit: b.CatalogCommit, Reason: b.Reason, NextAttemptAt: b.NextAttemptAt,
		CancelRequestedAt: b.CancelRequestedAt, PullRequest: b.PullRequest, Attempt: b.Attempt,
		RetryOf: b.RetryOf, Infra: b.Infra, SupersededBy: b.SupersededBy, LaunchingAt: b.LaunchingAt,
		InfraRetries: b.InfraRetries, Supersedable: b.Supersedable, Secrets: b.Secrets,
		SecretsWithheld: b.SecretsWithheld,
	}
}

// BuildsOf returns records as the API shows them; never nil, so that an
// empty list is [] on the wire.
func BuildsOf(recs []build.Record) []Build {
	out := make([]Build, 0, len(recs))
	for _, r := range recs {
		out = append(out, BuildOf(r))
	}
	return out
}

// Records returns builds as build records.
func Records(builds []Build) []build.Record {
	out := make([]build.Record, 0, len(builds))
	for _, b := range builds {
		out = append(out, b.Record())
	}
	return out
}

// BuildPage is GET /api/v1/projects/{team}/{project}/builds: a page of the
// project's history, newest first, the cursor of the next page ("" on the
// last), and the average duration of its recent successful builds (0: no
// figure).
type BuildPage struct {
	Builds                 []Build `json:"builds"`
	NextCursor             string  `json:"nextCursor,omitempty"`
	AverageDurationSeconds float64 `json:"averageDurationSeconds,omitempty"`
}

// BuildList is GET /api/v1/builds?status=running: the running builds.
type BuildList struct {
	Builds []Build `json:"builds"`
}

// BuildRequest is the body of POST /api/v1/projects/{team}/{project}/builds.
type BuildRequest struct {
	Ref     string        `json:"ref"`
	RefType build.RefType `json:"refType,omitempty"`
	SHA     string        `json:"sha,omitempty"`
}

// Queued is a build a request queued: the answer of POST .../builds and
// POST /api/v1/builds/{id}/rebuild, and each build of a webhook's answer
// (which has no number).
type Queued struct {
	ID      build.ID `json:"id"`
	LockKey string   `json:"lockKey"`
	// Number is the build's number in its project; a webhook's answer
	// leaves it out.
	Number int `json:"number,omitempty"`
}

// The answers of POST /hooks/github, one per outcome: Queued builds
// (QueuedBuilds), nothing built and why (Ignored), a pull request's head
// waiting for approval (PullWaiting), a closed pull request's builds
// cancelled (PullClosed), a ping's Pong. A client decodes any of them
// into HookAnswer.

// QueuedBuilds is a webhook's answer when it queued builds (or a
// redelivery found the builds it queued before).
type QueuedBuilds struct {
	Builds []Queued `json:"builds"`
}

// Ignored is a webhook's answer when it builds nothing, with the reason.
type Ignored struct {
	Ignored string `json:"ignored"`
}

// PullWaiting is the answer of a pull request event that left its head
// waiting for approval.
type PullWaiting struct {
	LockKey string `json:"lockKey"`
	Waiting string `json:"waiting"`
}

// PullClosed is the answer of a pull request's close: the builds it
// cancelled ([] for none).
type PullClosed struct {
	Cancelled []build.ID `json:"cancelled"`
	LockKey   string     `json:"lockKey"`
}

// Pong is the answer of a ping event.
type Pong struct {
	Pong string `json:"pong"`
}

// HookAnswer is every answer of POST /hooks/github as a client decodes
// it: the fields of the answer it got are set.
type HookAnswer struct {
	Builds    []Queued   `json:"builds,omitempty"`
	Cancelled []build.ID `json:"cancelled,omitempty"`
	Ignored   string     `json:"ignored,omitempty"`
	LockKey   string     `json:"lockKey,omitempty"`
	Pong      string     `json:"pong,omitempty"`
	Waiting   string     `json:"waiting,omitempty"`
	// Error is set on an error answer.
	Error string `json:"error,omitempty"`
}

// Refreshed is the answer of POST /hooks/buildscripts: how many projects
// the catalog holds now.
type Refreshed struct {
	Projects int `json:"projects"`
}

// Cancelling is the answer of cancelling a running build: it is being
// stopped, and its record becomes cancelled when its end is recorded.
type Cancelling struct {
	ID     build.ID `json:"id"`
	Status string   `json:"status"`
}

// Queue is GET /api/v1/queue: the queue's counts and the requests that
// have not started, oldest first.
type Queue struct {
	Stats build.QueueStats `json:"stats"`
	// Waiting is a page of the waiting requests (?offset=, ?limit=),
	// WaitingTotal how many wait in all.
	Waiting      []Waiting `json:"waiting"`
	WaitingTotal int       `json:"waitingTotal"`
}

// Waiting is one request of Queue: queued or deferred, deferred ones with
// the reason and the next attempt.
type Waiting struct {
	ID            build.ID      `json:"id"`
	Number        int           `json:"number,omitempty"`
	LockKey       string        `json:"lockKey"`
	Status        build.Status  `json:"status"`
	Reason        string        `json:"reason,omitempty"`
	QueuedAt      time.Time     `json:"queuedAt"`
	NextAttemptAt time.Time     `json:"nextAttemptAt,omitzero"`
	Trigger       build.Trigger `json:"trigger"`
	Ref           string        `json:"ref"`
}

// WaitingOf returns a waiting record as Queue lists it.
func WaitingOf(r build.Record) Waiting {
	return Waiting{ID: r.BuildID, Number: r.Number, LockKey: r.LockKey(), Status: r.Status, Reason: r.Reason,
		QueuedAt: r.QueuedAt, NextAttemptAt: r.NextAttemptAt, Trigger: r.Trigger, Ref: r.Ref}
}

// Locks is GET /api/v1/locks: the held locks, ordered by key.
type Locks struct {
	Locks []build.Lease `json:"locks"`
}

// Released is the answer of DELETE /api/v1/locks/{team}/{project}/{ref}.
type Released struct {
	Released string `json:"released"`
}

// Pause is the optional body of POST /api/v1/dispatch/pause. The gate's
// answers are build.GateState.
type Pause struct {
	Reason string `json:"reason"`
}

// Teams is GET /api/v1/teams.
type Teams struct {
	Teams []string `json:"teams"`
}

// Refs is GET /api/v1/projects/{team}/{project}/refs.
type Refs struct {
	Branches []build.RefInfo `json:"branches"`
	Tags     []build.RefInfo `json:"tags"`
}

// Pulls is GET /api/v1/projects/{team}/{project}/pulls.
type Pulls struct {
	Pulls []build.PullRequestState `json:"pulls"`
}

// Secrets is GET /api/v1/projects/{team}/{project}/secrets: names, sizes
// and update times, never a value.
type Secrets struct {
	Team    string             `json:"team"`
	Project string             `json:"project"`
	Secrets []build.SecretInfo `json:"secrets"`
}

// SecretChange answers a PUT or DELETE of one secret.
type SecretChange struct {
	Name    string `json:"name"`
	Size    int    `json:"size,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Session is the body of POST /api/v1/session.
type Session struct {
	Token string `json:"token"`
}

// Status is the answer of /healthz and of a ready /readyz.
type Status struct {
	Status string `json:"status"`
}

// Projects is GET /api/v1/projects: the catalog's projects, and the
// entries of the build-scripts repository skipped for their names (a
// project directory named "my app"), with the reason; they are no
// projects, so a list filtered by team leaves them out.
type Projects struct {
	Projects []Project `json:"projects"`
	Skipped  []string  `json:"skipped,omitempty"`
}

// Project is a catalog entry as the API shows it: the descriptor with its
// sidecars' env names but never their values, which are often passwords
// (POSTGRES_PASSWORD). Its JSON is build.Project's, with each sidecar's
// env as [{"name": ...}].
type Project struct {
	build.Project
	Descriptor *Descriptor `json:"descriptor,omitempty"`
}

// Descriptor is a project.json as the API shows it (see Project).
type Descriptor struct {
	build.Descriptor
	Sidecars []Sidecar `json:"sidecars,omitempty"`
}

// Sidecar is a sidecar as the API shows it: env names, no values.
type Sidecar struct {
	build.Sidecar
	Env []EnvName `json:"env,omitempty"`
}

// EnvName is a sidecar's environment variable without its value.
type EnvName struct {
	Name string `json:"name"`
}

// ProjectOf returns p as the API shows it, without env values.
func ProjectOf(p build.Project) Project {
	out := Project{Project: p}
	out.Project.Descriptor = nil
	if p.Descriptor == nil {
		return out
	}
	d := &Descriptor{Descriptor: *p.Descriptor}
	d.Descriptor.Sidecars = nil
	for _, sc := range p.Descriptor.Sidecars {
		ps := Sidecar{Sidecar: sc}
		ps.Sidecar.Env = nil
		for _, e := range sc.Env {
			ps.Env = append(ps.Env, EnvName{Name: e.Name})
		}
		d.Sidecars = append(d.Sidecars, ps)
	}
	out.Descriptor = d
	return out
}

// LogTimes is GET /api/v1/builds/{id}/log?times=1: when the console log's
// lines began, the index the entrypoint keeps beside the log (see
// build.LogTimes for what the fields mean), and whether it is final.
type LogTimes struct {
	Start        time.Time  `json:"start"`
	ResolutionMs int64      `json:"resolutionMs"`
	Lines        int64      `json:"lines"`
	Times        [][2]int64 `json:"times"`
	// Complete is true for the stored index of an ended build; false for
	// a running build's, which grows as it writes.
	Complete bool `json:"complete"`
}

// LogTimesOf is the answer of t; Times is never null.
func LogTimesOf(t build.LogTimes, complete bool) LogTimes {
	times := t.Times
	if times == nil {
		times = [][2]int64{}
	}
	return LogTimes{Start: t.Start, ResolutionMs: t.ResolutionMs, Lines: t.Lines, Times: times, Complete: complete}
}
