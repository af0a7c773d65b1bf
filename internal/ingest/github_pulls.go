package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/decap-ci/decap/internal/build"
)

// The pull request events Decap reads: pull_request and issue_comment
// (DESIGN.md "Pull requests"). Everything in them is the sender's to
// choose except what GitHub itself writes: the repository, the head and
// base repositories' IDs, author_association, the times. Trust is decided
// from those alone.

// ghRepo is a repository as a payload names it.
type ghRepo struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	FullName string `json:"full_name"`
	Owner    struct {
		Login string `json:"login"`
	} `json:"owner"`
}

// ghBranch is a pull request's head or base: a branch of a repository.
// Repo is null when the head's fork was deleted.
type ghBranch struct {
	Ref  string  `json:"ref"`
	SHA  string  `json:"sha"`
	Repo *ghRepo `json:"repo"`
}

type ghUser struct {
	Login string `json:"login"`
}

// pullRequestEvent holds the fields of a pull_request payload that Decap
// reads.
type pullRequestEvent struct {
	Action      string `json:"action"`
	PullRequest struct {
		Number            int       `json:"number"`
		State             string    `json:"state"`
		Draft             bool      `json:"draft"`
		Title             string    `json:"title"`
		AuthorAssociation string    `json:"author_association"`
		UpdatedAt         time.Time `json:"updated_at"`
		User              ghUser    `json:"user"`
		Head              ghBranch  `json:"head"`
		Base              ghBranch  `json:"base"`
	} `json:"pull_request"`
	Label *struct {
		Name string `json:"name"`
	} `json:"label"`
	Repository ghRepo `json:"repository"`
	Sender     ghUser `json:"sender"`
}

// parsedPull is a pull_request event reduced to what Decap decides on.
type parsedPull struct {
	action, sender string
	// label is the label a labeled event added.
	label string
	// state is the pull request as the event shows it (Version, State,
	// Reason, Build and the approval are Decap's, not the event's).
	state build.PullRequestState
	// replayKey names the event itself (see parsedPush.replayKey).
	replayKey string
}

// parsePullRequest reads a pull_request payload. A payload that is not
// JSON, lacks the pull request, or names a hostile team, project, branch
// or head repository is an ErrInvalid error. Trust is decided here:
// the head repository is the base repository (by ID, which a fork never
// shares) and the author is OWNER, MEMBER or COLLABORATOR.
func parsePullRequest(body []byte) (parsedPull, error) {
	var ev pullRequestEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return parsedPull{}, fmt.Errorf("%w: pull_request payload: %v", build.ErrInvalid, err)
	}
	pr := ev.PullRequest
	team, project, err := repoNames(ev.Repository)
	if err != nil {
		return parsedPull{}, err
	}
	if pr.Number < 1 || pr.Number > build.MaxPullNumber {
		return parsedPull{}, fmt.Errorf("%w: pull_request payload has no pull request number", build.ErrInvalid)
	}
	if ev.Action == "" || len(ev.Action) > 64 {
		return parsedPull{}, fmt.Errorf("%w: pull_request payload has no action", build.ErrInvalid)
	}
	if pr.UpdatedAt.IsZero() {
		return parsedPull{}, fmt.Errorf("%w: pull_request payload has no updated_at", build.ErrInvalid)
	}
	p := parsedPull{action: ev.Action, sender: bounded(ev.Sender.Login, 256)}
	if ev.Label != nil {
		p.label = bounded(ev.Label.Name, 256)
	}
	headRepo := ""
	if pr.Head.Repo != nil {
		headRepo = pr.Head.Repo.FullName
	}
	p.state = build.PullRequestState{
		Team: team, Project: project, Number: pr.Number, Title: bounded(pr.Title, build.MaxPullTitle),
		Author: bounded(pr.User.Login, 256), AuthorAssociation: bounded(pr.AuthorAssociation, 64),
		BaseRef: pr.Base.Ref, HeadRef: pr.Head.Ref, HeadRepo: headRepo, HeadSHA: pr.Head.SHA,
		HeadAt: pr.UpdatedAt.UTC(), Draft: pr.Draft, Closed: pr.State == "closed",
		Trusted: sameRepo(pr.Head.Repo, pr.Base.Repo) && build.TrustedAssociation(pr.AuthorAssociation),
		EventAt: pr.UpdatedAt.UTC(),
	}
	check := build.PullRequest{Number: pr.Number, BaseRef: pr.Base.Ref, HeadRef: pr.Head.Ref, HeadRepo: headRepo, HeadSHA: pr.Head.SHA}
	if err := check.Validate(); err != nil {
		return parsedPull{}, fmt.Errorf("pull request %s#%d: %w", build.ProjectKey(team, project), pr.Number, err)
	}
	p.replayKey = eventKey("pull_request", team, project, strconv.Itoa(pr.Number), ev.Action, pr.Head.SHA,
		pr.UpdatedAt.UTC().Format(time.RFC3339Nano), p.label)
	return p, nil
}

// sameRepo reports whether the head is a branch of the base repository
// itself: same repository ID (a fork has its own), or, when a payload
// lacks IDs, the same full name. A deleted fork (no head repository) is
// not.
func sameRepo(head, base *ghRepo) bool {
	switch {
	case head == nil || base == nil:
		return false
	case head.ID != 0 && base.ID != 0:
		return head.ID == base.ID
	}
	return head.FullName != "" && strings.EqualFold(head.FullName, base.FullName)
}

// repoNames returns the team and project a payload's repository names,
// checked as every name Decap keys by.
func repoNames(r ghRepo) (team, project string, err error) {
	if err := build.ValidateName("repository owner", r.Owner.Login); err != nil {
		return "", "", err
	}
	if err := build.ValidateName("repository name", r.Name); err != nil {
		return "", "", err
	}
	return r.Owner.Login, r.Name, nil
}

// bounded cuts s to at most n bytes of valid UTF-8 (what a stored pull
// request's text fields may hold).
func bounded(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// eventKey is the idempotency key of one event, its parts hashed (see
// replayKey): GitHub sends each event once, under one delivery ID, so
// the same signed body under another delivery ID is a replay.
func eventKey(kind string, parts ...string) string {
	h := sha256.New()
	for _, part := range append([]string{kind}, parts...) {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return kind + ":" + hex.EncodeToString(h.Sum(nil))
}

// issueCommentEvent holds the fields of an issue_comment payload that
// Decap reads.
type issueCommentEvent struct {
	Action string `json:"action"`
	Issue  struct {
		Number int `json:"number"`
		// PullRequest is present when the issue is a pull request.
		PullRequest *struct {
			URL string `json:"url"`
		} `json:"pull_request"`
	} `json:"issue"`
	Comment struct {
		ID                int64     `json:"id"`
		Body              string    `json:"body"`
		AuthorAssociation string    `json:"author_association"`
		CreatedAt         time.Time `json:"created_at"`
		User              ghUser    `json:"user"`
	} `json:"comment"`
	Repository ghRepo `json:"repository"`
}

// Comment commands.
const (
	cmdOKToTest = "/ok-to-test"
	cmdRetest   = "/retest"
	// labelOKToTest is the label that approves like /ok-to-test.
	labelOKToTest = "ok-to-test"
)

// parsedComment is an issue_comment event reduced to what Decap decides
// on.
type parsedComment struct {
	team, project string
	number        int
	// command is cmdOKToTest or cmdRetest; ignored says why there is
	// none to act on.
	command, ignored string
	author           string
	association      string
	createdAt        time.Time
	replayKey        string
}

// parseIssueComment reads an issue_comment payload. Only a created
// comment on a pull request with a command on a line of its own
// (/ok-to-test, or /retest) is acted on; anything else comes back with
// ignored set. A malformed payload or a hostile name is ErrInvalid.
func parseIssueComment(body []byte) (parsedComment, error) {
	var ev issueCommentEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return parsedComment{}, fmt.Errorf("%w: issue_comment payload: %v", build.ErrInvalid, err)
	}
	team, project, err := repoNames(ev.Repository)
	if err != nil {
		return parsedComment{}, err
	}
	c := parsedComment{team: team, project: project, number: ev.Issue.Number,
		author: bounded(ev.Comment.User.Login, 256), association: bounded(ev.Comment.AuthorAssociation, 64),
		createdAt: ev.Comment.CreatedAt.UTC()}
	switch {
	case ev.Action != "created":
		c.ignored = fmt.Sprintf("a comment %s builds nothing (only a new comment does)", bounded(ev.Action, 40))
		return c, nil
	case ev.Issue.PullRequest == nil:
		c.ignored = fmt.Sprintf("#%d is an issue, not a pull request", ev.Issue.Number)
		return c, nil
	case ev.Issue.Number < 1 || ev.Issue.Number > build.MaxPullNumber:
		return parsedComment{}, fmt.Errorf("%w: issue_comment payload has no pull request number", build.ErrInvalid)
	}
	c.command = commentCommand(ev.Comment.Body)
	if c.command == "" {
		c.ignored = "the comment has no " + cmdOKToTest + " or " + cmdRetest + " line"
		return c, nil
	}
	if c.createdAt.IsZero() || ev.Comment.ID == 0 {
		return parsedComment{}, fmt.Errorf("%w: issue_comment payload has no comment id or created_at", build.ErrInvalid)
	}
	c.replayKey = eventKey("issue_comment", team, project, strconv.FormatInt(ev.Comment.ID, 10))
	return c, nil
}

// commentCommand returns the command a comment gives: a line whose first
// word is /ok-to-test or /retest (/ok-to-test when there are both: an
// approval also builds). "" when there is none. It reads at most 64 KiB
// of the body.
func commentCommand(body string) string {
	if len(body) > 64<<10 {
		body = body[:64<<10]
	}
	found := ""
	for line := range strings.Lines(body) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case cmdOKToTest:
			return cmdOKToTest
		case cmdRetest:
			found = cmdRetest
		}
	}
	return found
}
