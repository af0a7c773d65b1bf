package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// Pull requests (DESIGN.md "Pull requests"). Each pull_request and
// issue_comment event is decided against what Decap knows of the pull
// request (a build.PullRequestState in the PullRequests store): the event
// gives the pull request's new state, and maybe a build of its head, a
// cancel of its builds, or a commit status saying it waits for approval.
//
// A head that waits for approval has no build request and no record
// until a trusted person approves it: the dispatcher never sees it, and
// the store, the UI's pull request list and the commit status say it
// waits. Approval is for that head SHA only; it makes the head built, not
// trusted (Request.Untrusted: no secrets).

// PullRequests stores what Decap knows of pull requests (see
// build.PullRequests for the contract): Put is a compare-and-swap on the
// entry's Version.
type PullRequests interface {
	Get(ctx context.Context, team, project string, number int) (build.PullRequestState, error)
	Put(ctx context.Context, p build.PullRequestState) error
	ListOpen(ctx context.Context, team, project string) ([]build.PullRequestState, error)
}

// projectPulls handles GET /api/v1/projects/:team/:project/pulls: the
// project's open pull requests as Decap knows them, by number: head,
// trust, approval, state (building, waiting for approval, draft,
// ignored) with its reason, and the latest build.
func (s *Server) projectPulls(c echo.Context) error {
	team, project, err := pathProject(c)
	if err != nil {
		return err
	}
	if s.deps.Pulls == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "this Decap keeps no pull request state")
	}
	list, err := s.deps.Pulls.ListOpen(c.Request().Context(), team, project)
	if err != nil {
		return fmt.Errorf("list the pull requests of %s: %w", build.ProjectKey(team, project), err)
	}
	if list == nil {
		list = []build.PullRequestState{}
	}
	return c.JSON(http.StatusOK, api.Pulls{Pulls: list})
}

// pullPutAttempts bounds the compare-and-swap retries of one event: each
// lost race means another event of the same pull request was stored in
// between.
const pullPutAttempts = 8

// pullDecision is what one event does to a pull request.
type pullDecision struct {
	// next is the entry to store; nothing is stored when stale is set.
	next  build.PullRequestState
	stale bool
	// build, when set, is the head's build to queue (BuildID and
	// RequestedAt are given when it is queued).
	build *build.Request
	// cancel asks for the pull request's queued and running builds to be
	// cancelled (it was closed), by cancelBy.
	cancel   bool
	cancelBy string
	// reason says why nothing is built, for the answer.
	reason string
	// waiting is set when the event left the head waiting for approval
	// (evaluate): the answer says so and its commit status is posted.
	waiting bool
}

// pullAnswer is what an event did, for the answer and the outcome.
type pullAnswer struct {
	outcome   string
	id        build.ID
	lockKey   string
	reason    string
	cancelled []build.ID
}

// pullRequestHook handles a pull_request event.
func (s *Server) pullRequestHook(c echo.Context, body []byte, delivery string) (string, error) {
	ev, err := parsePullRequest(body)
	if err != nil {
		return "", err
	}
	desc, why, err := s.pullProject(ev.state.Team, ev.state.Project)
	if err != nil || why != "" {
		return ignoreOr(c, why, err)
	}
	if !pullActions[ev.action] {
		// Stored anyway below, so the UI sees a draft or a new base;
		// only these actions build.
		s.log.Debug("pull_request action builds nothing", "action", ev.action)
	}
	ans, err := s.applyPull(c.Request().Context(), ev.state.Team, ev.state.Project, ev.state.Number, delivery, ev.replayKey,
		func(stored *build.PullRequestState) pullDecision { return decidePullEvent(stored, ev, desc) })
	if err != nil {
		return "", err
	}
	return ans.outcome, answerPull(c, ans)
}

// pullActions are the pull_request actions that may build (DESIGN.md);
// closed cancels. Every other action only updates what Decap knows.
var pullActions = map[string]bool{"opened": true, "reopened": true, "synchronize": true, "ready_for_review": true, "labeled": true, "closed": true}

// issueCommentHook handles an issue_comment event: /ok-to-test and
// /retest on a pull request.
func (s *Server) issueCommentHook(c echo.Context, body []byte, delivery string) (string, error) {
	cm, err := parseIssueComment(body)
	if err != nil {
		return "", err
	}
	if cm.ignored != "" {
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: cm.ignored})
	}
	desc, why, err := s.pullProject(cm.team, cm.project)
	if err != nil || why != "" {
		return ignoreOr(c, why, err)
	}
	log := s.log.With("lock_key", build.LockKey(cm.team, cm.project, build.PullRef(cm.number)), "delivery_id", delivery,
		"command", cm.command, "by", cm.author, "author_association", cm.association)
	if !build.TrustedAssociation(cm.association) {
		reason := fmt.Sprintf("%s by %s ignored: GitHub calls them %s, and only an OWNER, MEMBER or COLLABORATOR of %s may approve or retest a pull request",
			cm.command, cm.author, orNone(cm.association), build.ProjectKey(cm.team, cm.project))
		log.Warn("pull request command from an untrusted person ignored")
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: reason})
	}
	ans, err := s.applyPull(c.Request().Context(), cm.team, cm.project, cm.number, delivery, cm.replayKey,
		func(stored *build.PullRequestState) pullDecision { return decideComment(stored, cm, desc) })
	if err != nil {
		return "", err
	}
	if ans.outcome == OutcomeIgnored && cm.command == cmdOKToTest {
		log.Info("approval ignored", "reason", ans.reason)
	}
	return ans.outcome, answerPull(c, ans)
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// pullProject looks up a project for a pull request event: its
// descriptor, or the reason the event builds nothing (unknown or
// unbuildable project, no pullRequests in project.json, no store).
func (s *Server) pullProject(team, project string) (build.Descriptor, string, error) {
	key := build.ProjectKey(team, project)
	desc, _, err := s.deps.Catalog.Lookup(team, project)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return desc, notInCatalog(team, project), nil
	case errors.Is(err, build.ErrInvalid):
		return desc, catalogReason(err), nil
	case err != nil:
		return desc, "", fmt.Errorf("look up %s: %w", key, err)
	case desc.PullRequests == nil:
		return desc, "project " + key + " does not build pull requests (its project.json has no pullRequests)", nil
	case s.deps.Pulls == nil:
		return desc, "this Decap keeps no pull request state, so it builds no pull requests", nil
	}
	return desc, "", nil
}

func ignoreOr(c echo.Context, why string, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: why})
}

// applyPull stores what decide makes of the pull request's stored entry
// (nil when there is none), queuing its build and cancelling its builds as
// the decision says. The store's compare-and-swap decides between events
// of one pull request that race: a lost race reads the entry again and
// decides again. Queuing is idempotent per delivery (and per replayed
// event), so a decision made twice queues one build.
func (s *Server) applyPull(ctx context.Context, team, project string, number int, delivery, replayKey string,
	decide func(stored *build.PullRequestState) pullDecision) (pullAnswer, error) {
	lockKey := build.LockKey(team, project, build.PullRef(number))
	log := s.log.With("lock_key", lockKey, "delivery_id", delivery)
	var queued build.ID
	first := false
	for attempt := 0; ; attempt++ {
		var storedPtr *build.PullRequestState
		stored, err := s.deps.Pulls.Get(ctx, team, project, number)
		switch {
		case err == nil:
			storedPtr = &stored
		case !errors.Is(err, build.ErrNotFound):
			return pullAnswer{}, fmt.Errorf("read pull request %s: %w", lockKey, err)
		}
		d := decide(storedPtr)
		if d.stale {
			if queued != "" && stored.Closed {
				// Queued on an earlier attempt, and the pull request was
				// closed meanwhile: the close may have looked for its
				// builds before this one was recorded.
				s.cancelPull(ctx, log, lockKey, fmt.Sprintf("the close of pull request #%d", number))
			}
			return pullAnswer{outcome: OutcomeIgnored, lockKey: lockKey, reason: d.reason}, nil
		}
		d.next.Version = stored.Version + 1
		if d.build != nil {
			now := s.now().UTC()
			req := *d.build
			req.BuildID, req.RequestedAt, req.DeliveryID = build.NewID(now), now, delivery
			id, isFirst, err := s.enqueue(ctx, req, replayKey)
			if err != nil {
				return pullAnswer{}, err
			}
			queued, first = id, first || isFirst
			d.next.Build, d.next.State, d.next.Reason = id, build.PullBuilding, ""
		}
		switch err := s.deps.Pulls.Put(ctx, d.next); {
		case errors.Is(err, build.ErrConflict) && attempt+1 < pullPutAttempts:
			continue
		case err != nil:
			return pullAnswer{}, fmt.Errorf("store pull request %s: %w", lockKey, err)
		}
		ans := pullAnswer{lockKey: lockKey, reason: d.reason}
		switch {
		case d.build != nil:
			ans.id, ans.outcome = queued, OutcomeQueued
			if !first {
				ans.outcome = OutcomeDuplicate
			}
		case d.cancel:
			ans.outcome = OutcomeClosed
			ans.cancelled = s.cancelPull(ctx, log, lockKey, d.cancelBy)
		case d.waiting:
			ans.outcome = OutcomeWaiting
			s.notifyWaiting(d.next)
			log.Info("pull request waits for approval", "sha", d.next.HeadSHA)
		default:
			ans.outcome = OutcomeIgnored
		}
		if queued != "" && d.build == nil && d.next.Closed && !d.cancel {
			s.cancelPull(ctx, log, lockKey, fmt.Sprintf("the close of pull request #%d", number))
		}
		return ans, nil
	}
}

// answerPull writes the answer of a pull request event.
func answerPull(c echo.Context, ans pullAnswer) error {
	switch ans.outcome {
	case OutcomeQueued, OutcomeDuplicate:
		return c.JSON(http.StatusAccepted, api.QueuedBuilds{Builds: []api.Queued{{ID: ans.id, LockKey: ans.lockKey}}})
	case OutcomeWaiting:
		return c.JSON(http.StatusAccepted, api.PullWaiting{LockKey: ans.lockKey, Waiting: ans.reason})
	case OutcomeClosed:
		ids := ans.cancelled
		if ids == nil {
			ids = []build.ID{}
		}
		return c.JSON(http.StatusAccepted, api.PullClosed{Cancelled: ids, LockKey: ans.lockKey})
	}
	return c.JSON(http.StatusAccepted, api.Ignored{Ignored: ans.reason})
}

// decidePullEvent decides a pull_request event against the stored entry.
func decidePullEvent(stored *build.PullRequestState, ev parsedPull, desc build.Descriptor) pullDecision {
	next := ev.state
	n := next.Number
	if stored != nil {
		if next.EventAt.Before(stored.EventAt) ||
			stored.Closed && next.EventAt.Equal(stored.EventAt) && ev.action != "reopened" && ev.action != "closed" {
			// GitHub may deliver events out of order; a close and an
			// event of the same second: the close wins.
			reason := fmt.Sprintf("the %s event of pull request #%d (updated %s) is older than what Decap knows of it (updated %s): it changes nothing",
				ev.action, n, next.EventAt.Format(time.RFC3339), stored.EventAt.Format(time.RFC3339))
			if ev.action == "labeled" && ev.label == labelOKToTest {
				reason = fmt.Sprintf("the %s label approves an older head of pull request #%d than %s: remove it and add it again to approve the head",
					labelOKToTest, n, short(stored.HeadSHA))
			}
			return pullDecision{stale: true, reason: reason}
		}
		next.ApprovedSHA, next.ApprovedBy, next.ApprovedAt = stored.ApprovedSHA, stored.ApprovedBy, stored.ApprovedAt
		next.Build = stored.Build
		if stored.HeadSHA == next.HeadSHA {
			next.HeadAt = stored.HeadAt // when this head came, not this event
		}
	}
	headChanged := stored == nil || stored.HeadSHA != next.HeadSHA
	d := pullDecision{next: next}
	switch ev.action {
	case "closed":
		d.next.State, d.next.Reason = build.PullClosed, ""
		d.cancel, d.cancelBy = true, fmt.Sprintf("%s, who closed pull request #%d", orSomebody(ev.sender), n)
		d.reason = fmt.Sprintf("pull request #%d closed", n)
		return d
	case "opened", "reopened", "synchronize", "ready_for_review":
		d.evaluate(desc, ev.sender)
		return d
	case "labeled":
		if ev.label == labelOKToTest {
			return d.approve(desc, stored, ev.sender, next.EventAt, "the "+labelOKToTest+" label")
		}
		d.keepState(stored)
		if headChanged && stored != nil {
			d.next.State, d.next.Reason = build.PullIgnored, "Decap missed the push of this head: a push or "+cmdRetest+" builds it"
		}
		d.reason = fmt.Sprintf("label %q builds nothing (the %s label approves an untrusted head)", bounded(ev.label, 50), labelOKToTest)
		return d
	}
	// converted_to_draft, edited, unlabeled, assigned, …: the entry is
	// updated (a draft, a new base), nothing is built.
	d.keepState(stored)
	if d.next.Draft {
		d.next.State, d.next.Reason = build.PullDraft, draftReason
	}
	d.reason = fmt.Sprintf("pull_request action %q builds nothing (opened, reopened, synchronize, ready_for_review and the %s label do)", bounded(ev.action, 40), labelOKToTest)
	return d
}

const draftReason = "a draft: built once it is marked ready for review"

// keepState keeps the stored entry's state (or the waiting state of a
// pull request first seen without a building event).
func (d *pullDecision) keepState(stored *build.PullRequestState) {
	if stored != nil {
		d.next.State, d.next.Reason = stored.State, stored.Reason
		return
	}
	d.next.State, d.next.Reason = build.PullIgnored, "no opened, synchronize or reopened event of it was received"
}

// approve records the approval of the head by by (at at, through what)
// and builds the head if that is what it waited for.
func (d pullDecision) approve(desc build.Descriptor, stored *build.PullRequestState, by string, at time.Time, what string) pullDecision {
	n := d.next.Number
	switch {
	case d.next.Trusted:
		d.keepOrEvaluate(stored, desc, by)
		d.reason = fmt.Sprintf("pull request #%d is trusted: its heads are built without approval", n)
		return d
	case desc.ForkPolicy() == build.ForksNever:
		d.keepOrEvaluate(stored, desc, by)
		d.reason = fmt.Sprintf("%s approves nothing: the project's pullRequests.forks is never, so untrusted pull requests are not built", what)
		return d
	case desc.ForkPolicy() == build.ForksAlways:
		d.keepOrEvaluate(stored, desc, by)
		d.reason = fmt.Sprintf("%s is not needed: the project's pullRequests.forks is always", what)
		return d
	case d.next.ApprovedSHA == d.next.HeadSHA:
		d.keepOrEvaluate(stored, desc, by)
		d.reason = fmt.Sprintf("head %s of pull request #%d is approved already (by %s); %s builds it again", short(d.next.HeadSHA), n, d.next.ApprovedBy, cmdRetest)
		return d
	}
	d.next.ApprovedSHA, d.next.ApprovedBy, d.next.ApprovedAt = d.next.HeadSHA, by, at
	d.evaluate(desc, by)
	if d.build == nil {
		d.reason = fmt.Sprintf("head %s approved by %s; %s", short(d.next.HeadSHA), by, d.reason)
	}
	return d
}

// keepOrEvaluate keeps the stored state of an unchanged head, and
// evaluates a head Decap did not know.
func (d *pullDecision) keepOrEvaluate(stored *build.PullRequestState, desc build.Descriptor, by string) {
	if stored != nil && stored.HeadSHA == d.next.HeadSHA {
		d.keepState(stored)
		return
	}
	d.evaluate(desc, by)
}

// evaluate decides the head of d.next: build it (d.build), or why not
// (its state and reason). by asked for the build.
func (d *pullDecision) evaluate(desc build.Descriptor, by string) {
	p := &d.next
	n := p.Number
	switch {
	case p.Closed:
		p.State, p.Reason = build.PullClosed, ""
	case !desc.BuildsPullRequestsInto(p.BaseRef):
		p.State, p.Reason = build.PullIgnored, fmt.Sprintf("base branch %q does not match pullRequests.baseRefRegex %q", p.BaseRef, desc.PullRequests.BaseRefRegex)
	case p.Draft:
		p.State, p.Reason = build.PullDraft, draftReason
	case p.Trusted:
		d.build = pullRequest(*p, "", by)
		return
	case desc.ForkPolicy() == build.ForksNever:
		p.State, p.Reason = build.PullIgnored, untrustedWhy(*p)+" and the project's pullRequests.forks is never"
	case desc.ForkPolicy() == build.ForksAlways:
		d.build = pullRequest(*p, "", by)
		return
	case p.ApprovedSHA == p.HeadSHA:
		d.build = pullRequest(*p, p.ApprovedBy, by)
		return
	default:
		p.State, d.waiting = build.PullWaiting, true
		p.Reason = fmt.Sprintf("%s: %s; an OWNER, MEMBER or COLLABORATOR approves head %s by commenting %s or adding the %s label",
			build.ReasonWaitingForApproval, untrustedWhy(*p), short(p.HeadSHA), cmdOKToTest, labelOKToTest)
	}
	d.reason = fmt.Sprintf("pull request #%d: %s", n, p.Reason)
}

// untrustedWhy says why a pull request is not trusted.
func untrustedWhy(p build.PullRequestState) string {
	if p.Fork() {
		if p.HeadRepo == "" {
			return "its head repository was deleted"
		}
		return "it comes from the fork " + p.HeadRepo
	}
	return fmt.Sprintf("its author %s is %s to the repository, not an OWNER, MEMBER or COLLABORATOR", orSomebody(p.Author), orNone(p.AuthorAssociation))
}

func orSomebody(s string) string {
	if s == "" {
		return "somebody"
	}
	return s
}

// pullRequest returns the build request of p's head, asked for by by;
// approvedBy names who approved an untrusted head.
func pullRequest(p build.PullRequestState, approvedBy, by string) *build.Request {
	return &build.Request{
		V: build.MessageVersion, Team: p.Team, Project: p.Project, Ref: build.PullRef(p.Number), RefType: build.Pull,
		SHA: p.HeadSHA, Trigger: build.TriggerPullRequest, RequestedBy: by,
		PullRequest: &build.PullRequest{Number: p.Number, BaseRef: p.BaseRef, HeadRef: p.HeadRef, HeadRepo: p.HeadRepo,
			HeadSHA: p.HeadSHA, Trusted: p.Trusted, ApprovedBy: approvedBy},
	}
}

// decideComment decides a trusted person's /ok-to-test or /retest.
func decideComment(stored *build.PullRequestState, c parsedComment, desc build.Descriptor) pullDecision {
	n := c.number
	if stored == nil {
		return pullDecision{stale: true, reason: fmt.Sprintf(
			"Decap has received no pull_request event of #%d, so it does not know its head (tick the webhook's Pull requests event)", n)}
	}
	if stored.Closed {
		return pullDecision{stale: true, reason: fmt.Sprintf("pull request #%d is closed", n)}
	}
	d := pullDecision{next: *stored}
	if c.command == cmdOKToTest {
		if !c.createdAt.After(stored.HeadAt) && !stored.Trusted {
			return pullDecision{stale: true, reason: fmt.Sprintf(
				"%s by %s (written %s) approves an older head of pull request #%d than %s (pushed %s): comment again to approve it",
				cmdOKToTest, c.author, c.createdAt.Format(time.RFC3339), n, short(stored.HeadSHA), stored.HeadAt.Format(time.RFC3339))}
		}
		d = d.approve(desc, stored, c.author, c.createdAt, cmdOKToTest+" by "+c.author)
		if d.build == nil && d.next == *stored {
			d.stale = true // nothing changed: nothing to store
		}
		return d
	}
	// /retest: the head again, if it is built at all.
	d.evaluate(desc, c.author)
	if d.build == nil {
		if d.next.State == build.PullWaiting {
			d.reason = fmt.Sprintf("%s builds nothing: head %s of pull request #%d waits for approval (%s)", cmdRetest, short(stored.HeadSHA), n, cmdOKToTest)
		}
		d.stale = true
	}
	return d
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// cancelPull cancels the pull request's queued and running builds, as
// DELETE /api/v1/builds/{id} does, and returns the ones it cancelled or
// asked to stop. by goes into their reason. Failures are logged: the
// close is stored, and a build it misses ends as its run does.
func (s *Server) cancelPull(ctx context.Context, log *slog.Logger, lockKey, by string) []build.ID {
	recs, err := s.deps.Records.Unfinished(ctx, lockKey)
	if err != nil {
		log.Warn("list the builds of a closed pull request", "err", err)
		return nil
	}
	var out []build.ID
	for _, rec := range recs {
		if rec.RefType != build.Pull {
			continue
		}
		rlog := s.recordLog(rec)
		if rec.Waiting() {
			if err := rec.Cancel(s.now().UTC(), by); err != nil {
				continue
			}
			switch err := s.deps.Records.Save(ctx, rec); {
			case err == nil:
				rlog.Info("build of a closed pull request cancelled before it started")
				s.notify(rec, Notifier.BuildEnded)
				out = append(out, rec.BuildID)
				continue
			case !errors.Is(err, build.ErrConflict):
				rlog.Warn("cancel the build of a closed pull request", "err", err)
				continue
			}
			// It started or ended meanwhile: stop it if it runs.
			cur, err := s.deps.Records.Get(ctx, rec.BuildID)
			if err != nil || cur.Status != build.StatusRunning {
				continue
			}
		}
		if s.deps.Canceller == nil {
			rlog.Warn("a running build of a closed pull request goes on: no executor configured that could cancel it")
			continue
		}
		switch err := s.deps.Canceller.Cancel(ctx, rec.BuildID); {
		case err == nil:
			rlog.Info("running build of a closed pull request cancelling")
			out = append(out, rec.BuildID)
		case !errors.Is(err, build.ErrNotFound):
			rlog.Warn("cancel the running build of a closed pull request", "err", err)
		}
	}
	return out
}

// notifyWaiting posts p's head's commit status, pending: waiting for
// approval, in the background.
func (s *Server) notifyWaiting(p build.PullRequestState) {
	if s.deps.Notifier == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.deps.Notifier.PullRequestWaiting(ctx, p); err != nil {
			s.log.Warn("notify about a pull request waiting for approval", "lock_key", p.LockKey(), "err", err)
		}
	}()
}
