package github

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-github/v93/github"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultRetryDelay is how long Statuses waits before its one retry after a
// 5xx answer.
const DefaultRetryDelay = time.Second

// maxDescription is GitHub's limit on a status description.
const maxDescription = 140

// statusAPI is the part of go-github's RepositoriesService that Statuses
// calls.
type statusAPI interface {
	CreateStatus(ctx context.Context, owner, repo, ref string, status github.RepoStatus) (*github.RepoStatus, *github.Response, error)
}

// Statuses posts a commit status for each build of a commit: pending when
// the build is queued, success, failure or error when it ends. The status
// context is "decap/<project>", so a repository built by two projects shows
// both; its target URL is the build's page in the UI.
//
// Without a token it posts nothing, and so does it for a record without a
// SHA: a build requested by hand or by the API for a branch name only has
// no commit to mark. It is safe for concurrent use.
type Statuses struct {
	api       statusAPI
	enabled   bool
	publicURL string
	retry     time.Duration
}

// NewStatuses returns a Statuses for cfg; retryDelay is the pause before
// the one retry after a 5xx answer (DefaultRetryDelay when <= 0).
func NewStatuses(cfg Config, retryDelay time.Duration) (*Statuses, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	return newStatuses(c.Repositories, cfg.Token != "", cfg.PublicURL, retryDelay), nil
}

func newStatuses(api statusAPI, enabled bool, publicURL string, retryDelay time.Duration) *Statuses {
	if retryDelay <= 0 {
		retryDelay = DefaultRetryDelay
	}
	return &Statuses{api: api, enabled: enabled, publicURL: strings.TrimRight(publicURL, "/"), retry: retryDelay}
}

// BuildQueued marks rec.SHA pending. It does nothing without a token or a
// SHA. Errors wrap build.ErrNotFound (repository or commit unknown to
// GitHub, or invisible to the token), build.ErrUnavailable (rate limit,
// GitHub down, after one retry on 5xx) or build.ErrInvalid; the caller logs
// them, a status is never worth failing a build for.
func (s *Statuses) BuildQueued(ctx context.Context, rec build.Record) error {
	return s.post(ctx, rec, "pending", fmt.Sprintf("build %s queued", shortID(rec.BuildID)))
}

// BuildEnded marks rec.SHA with the build's result: success for succeeded,
// failure for failed, error for errored, timed_out, cancelled and expired.
// A skipped record posts nothing: it was never built, and a skip (such as a
// duplicate delivery) must not overwrite the status of the build that ran.
// A record that is not final is a build.ErrInvalid error. Otherwise as
// BuildQueued.
func (s *Statuses) BuildEnded(ctx context.Context, rec build.Record) error {
	if !rec.Status.Final() {
		return fmt.Errorf("%w: build %s is %s, not ended", build.ErrInvalid, rec.BuildID, rec.Status)
	}
	state, desc := ended(rec)
	if state == "" {
		return nil
	}
	return s.post(ctx, rec, state, desc)
}

// ended returns the commit status state and description for an ended
// build; "" for a skipped one, which gets no status.
func ended(rec build.Record) (state, description string) {
	id := shortID(rec.BuildID)
	d := rec.Duration().Round(time.Second)
	switch rec.Status {
	case build.StatusSucceeded:
		return "success", fmt.Sprintf("build %s succeeded in %s", id, d)
	case build.StatusFailed:
		if rec.ExitCode != nil {
			return "failure", fmt.Sprintf("build %s failed (exit code %d) after %s", id, *rec.ExitCode, d)
		}
		return "failure", fmt.Sprintf("build %s failed after %s", id, d)
	case build.StatusTimedOut:
		return "error", fmt.Sprintf("build %s timed out after %s", id, d)
	case build.StatusCancelled:
		return "error", fmt.Sprintf("build %s was cancelled", id)
	case build.StatusExpired:
		return "error", withReason(fmt.Sprintf("build %s expired before it ran", id), rec.Reason)
	case build.StatusErrored:
		return "error", withReason(fmt.Sprintf("build %s errored", id), rec.Reason)
	}
	return "", ""
}

func withReason(s, reason string) string {
	if reason == "" {
		return s
	}
	return s + ": " + reason
}

// post creates one status of rec's build, retrying once on a 5xx answer.
func (s *Statuses) post(ctx context.Context, rec build.Record, state, desc string) error {
	return s.postTries(ctx, rec, state, desc, 2)
}

// postTries creates one status of rec's build in up to tries tries, the
// next after a 5xx answer.
func (s *Statuses) postTries(ctx context.Context, rec build.Record, state, desc string, tries int) error {
	target := ""
	if s.publicURL != "" && rec.BuildID != "" {
		target = s.publicURL + "/ui/builds/" + string(rec.BuildID)
	}
	if err := s.create(ctx, rec.Team, rec.Project, rec.SHA, state, desc, target, tries); err != nil {
		return fmt.Errorf("post %s status of build %s: %w", state, rec.BuildID, err)
	}
	return nil
}

// PullRequestWaiting marks the head of p pending, "waiting for approval",
// linking to the project's page, where its pull requests are listed. It
// does nothing without a token; errors as BuildQueued. The status has the
// builds' context, so the head's build replaces it once it is approved.
func (s *Statuses) PullRequestWaiting(ctx context.Context, p build.PullRequestState) error {
	target := ""
	if s.publicURL != "" {
		target = fmt.Sprintf("%s/ui/projects/%s/%s#pull-%d", s.publicURL, p.Team, p.Project, p.Number)
	}
	desc := "waiting for approval: an owner, member or collaborator comments /ok-to-test"
	if err := s.create(ctx, p.Team, p.Project, p.HeadSHA, "pending", desc, target, 2); err != nil {
		return fmt.Errorf("post the waiting status of pull request %s: %w", p.LockKey(), err)
	}
	return nil
}

// create creates one status on team/project's commit sha in up to tries
// tries, the next after a 5xx answer; nothing without a token or a SHA.
func (s *Statuses) create(ctx context.Context, team, project, sha, state, desc, target string, tries int) error {
	if !s.enabled || sha == "" {
		return nil
	}
	if err := build.ValidateName("team", team); err != nil {
		return err
	}
	if err := build.ValidateName("project", project); err != nil {
		return err
	}
	st := github.RepoStatus{
		State:       github.Ptr(state),
		Description: github.Ptr(truncate(desc, maxDescription)),
		Context:     github.Ptr(statusContext(project)),
	}
	if target != "" {
		st.TargetURL = github.Ptr(target)
	}
	_, _, err := s.api.CreateStatus(ctx, team, project, sha, st)
	if is5xx(err) && tries > 1 {
		t := time.NewTimer(s.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		_, _, err = s.api.CreateStatus(ctx, team, project, sha, st)
	}
	if err != nil {
		return classify(err, "commit "+build.ProjectKey(team, project)+"@"+truncate(sha, 12), time.Now())
	}
	return nil
}

// statusContext is "decap/<project>", or "decap" without a project.
func statusContext(project string) string {
	if project == "" {
		return "decap"
	}
	return "decap/" + project
}

// shortID is the first 8 characters of a build ID and an ellipsis; the
// status's link carries the whole ID.
func shortID(id build.ID) string {
	if len(id) <= 8 {
		return string(id)
	}
	return string(id[:8]) + "…"
}

// truncate cuts s to at most n runes, the last of them an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
