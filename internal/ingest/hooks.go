package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/supersede"
)

// githubHook handles POST /hooks/github: verify, then push → build request,
// pull_request and issue_comment → a pull request's build, approval or
// cancel (pulls.go), ping → 200, anything else → 202 with the reason it
// builds nothing. The
// Observer hears the event and its outcome.
func (s *Server) githubHook(c echo.Context) error {
	outcome, err := s.handleGitHub(c)
	if outcome == "" {
		outcome = hookOutcome(err)
	}
	s.obs.WebhookHandled(eventLabel(c.Request().Header.Get("X-GitHub-Event")), outcome)
	return err
}

// handleGitHub is githubHook; it returns the outcome once one is decided,
// and "" when an error decides it (see hookOutcome).
func (s *Server) handleGitHub(c echo.Context) (string, error) {
	if err := s.signedOrRefused(c); err != nil {
		return "", err
	}
	body, err := s.readBody(c)
	if err != nil {
		return "", err
	}
	h := c.Request().Header
	if !s.cfg.InsecureSkipSignature {
		if err := VerifySignature(s.cfg.WebhookSecret, body, h.Get("X-Hub-Signature-256")); err != nil {
			return "", err
		}
	}
	event, delivery := h.Get("X-GitHub-Event"), h.Get("X-GitHub-Delivery")
	if event == "" {
		return "", echo.NewHTTPError(http.StatusBadRequest, "X-GitHub-Event header is missing")
	}
	switch event {
	case "ping":
		return OutcomeIgnored, c.JSON(http.StatusOK, api.Pong{Pong: delivery})
	case "push", "pull_request", "issue_comment":
	default:
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: fmt.Sprintf("event %q does not trigger builds", truncate(event, 50))})
	}
	if delivery == "" || len(delivery) > 128 || strings.ContainsFunc(delivery, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return "", echo.NewHTTPError(http.StatusBadRequest, "X-GitHub-Delivery header is missing or malformed")
	}
	if ct := h.Get(echo.HeaderContentType); ct != "" && !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		return "", echo.NewHTTPError(http.StatusUnsupportedMediaType, event+" payload must be application/json (set the webhook's content type to JSON)")
	}
	switch event {
	case "pull_request":
		return s.pullRequestHook(c, body, delivery)
	case "issue_comment":
		return s.issueCommentHook(c, body, delivery)
	}
	push, err := parsePush(body)
	if err != nil {
		return "", err
	}
	if push.ignored != "" {
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: push.ignored})
	}
	key := build.ProjectKey(push.team, push.project)
	desc, _, err := s.deps.Catalog.Lookup(push.team, push.project)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: notInCatalog(push.team, push.project)})
	case errors.Is(err, build.ErrInvalid):
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: catalogReason(err)})
	case err != nil:
		return "", fmt.Errorf("look up %s: %w", key, err)
	}
	if !desc.Manages(push.ref) {
		return OutcomeIgnored, c.JSON(http.StatusAccepted, api.Ignored{Ignored: fmt.Sprintf("ref %q does not match managedRefRegex %q", push.ref, desc.ManagedRefRegex)})
	}
	now := s.now().UTC()
	req := build.Request{
		V: build.MessageVersion, BuildID: build.NewID(now), Team: push.team, Project: push.project,
		Ref: push.ref, RefType: push.refType, SHA: push.sha, Trigger: build.TriggerPush,
		RequestedBy: push.pusher, RequestedAt: now, DeliveryID: delivery,
	}
	if err := req.Validate(); err != nil {
		return "", err
	}
	id, first, err := s.enqueue(c.Request().Context(), req, push.replayKey)
	if err != nil {
		return "", err
	}
	outcome := OutcomeQueued
	if !first {
		outcome = OutcomeDuplicate
	}
	return outcome, c.JSON(http.StatusAccepted, api.QueuedBuilds{Builds: []api.Queued{{ID: id, LockKey: req.LockKey()}}})
}

// hookOutcome is the outcome of a webhook that err ended: unauthorized,
// invalid (any 4xx answer), or error.
func hookOutcome(err error) string {
	var he *echo.HTTPError
	switch {
	case errors.Is(err, errUnauthorized):
		return OutcomeUnauthorized
	case errors.As(err, &he) && he.Code < http.StatusInternalServerError, errors.Is(err, build.ErrInvalid):
		return OutcomeInvalid
	}
	return OutcomeError
}

// eventLabel bounds the X-GitHub-Event header, which anybody can send, to
// the few values a metric label may take.
func eventLabel(event string) string {
	switch event {
	case "push", "ping", "pull_request", "issue_comment":
		return event
	case "":
		return "none"
	}
	return "other"
}

// refreshCatalog handles POST /hooks/buildscripts. It is signed like any
// GitHub webhook when a secret is configured.
func (s *Server) refreshCatalog(c echo.Context) error {
	if err := s.signedOrRefused(c); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	if !s.cfg.InsecureSkipSignature {
		if err := VerifySignature(s.cfg.WebhookSecret, body, c.Request().Header.Get("X-Hub-Signature-256")); err != nil {
			return err
		}
	}
	if err := s.deps.Catalog.Refresh(c.Request().Context()); err != nil {
		return fmt.Errorf("refresh catalog: %w", err)
	}
	return c.JSON(http.StatusAccepted, api.Refreshed{Projects: len(s.deps.Catalog.Projects())})
}

// signedOrRefused refuses a webhook that cannot be signed (no secret is
// configured) or is not (no X-Hub-Signature-256 header) before a byte of
// its body is read: an unsigned upload costs no memory.
func (s *Server) signedOrRefused(c echo.Context) error {
	if s.cfg.InsecureSkipSignature {
		return nil
	}
	if len(s.cfg.WebhookSecret) == 0 {
		return fmt.Errorf("%w: no webhook secret is configured, so no signature can be verified", errUnauthorized)
	}
	if c.Request().Header.Get("X-Hub-Signature-256") == "" {
		s.obs.Rejected(RejectUnsigned)
		return fmt.Errorf("%w: X-Hub-Signature-256 header is missing", errUnauthorized)
	}
	return nil
}

// enqueue records and publishes a request, and returns its build ID. A
// redelivered webhook gets the build ID of the delivery's first request, so
// every ID ingest answers with has a record: the redelivery is published
// again under that ID (the queue's deduplication or the dispatcher's
// once-only check drops it if it was queued or built already), which also
// repairs a first attempt that was recorded but never queued. first is
// false for such a redelivery.
//
// replayKey, when not empty, names the push the request comes from
// (parsedPush.replayKey): a push already accepted under another delivery
// ID is a replay of a signed body. It is answered with the first build and
// publishes nothing. The push is claimed before the delivery, so that a
// replayed delivery is bound to the first build too and its own
// redeliveries never build.
func (s *Server) enqueue(ctx context.Context, req build.Request, replayKey string) (id build.ID, first bool, err error) {
	log := s.log.With("lock_key", req.LockKey())
	first = true
	claims := make([]string, 0, 2)
	if replayKey != "" {
		claims = append(claims, replayKey)
	}
	if req.DeliveryID != "" {
		log = log.With("delivery_id", req.DeliveryID)
		claims = append(claims, req.IdempotencyKey())
	}
	// A new request's claims, record and message are written at once (one
	// write on the embedded store); a redelivery's claims name its first
	// build, and nothing else is written. A project that supersedes
	// waiting requests only (the default for a branch) has them ended in
	// that same write; one that stops running builds too goes through
	// supersede.Older after it (supersedeOlder).
	policy := s.supersedePolicy(req)
	start := time.Now()
	var owner build.ID
	var superseded []build.ID
	if policy.Queued && !policy.Running {
		owner, superseded, err = s.deps.Intake.EnqueueSuperseding(ctx, req, claims, build.IdempotencyTTL, s.now().UTC())
		if err != nil && owner != "" {
			// Accepted; only the superseding failed (build.Intake),
			// which costs build time: the older requests run.
			log.Warn("supersede older requests", "err", err)
			err = nil
		}
	} else {
		owner, err = s.deps.Intake.Enqueue(ctx, req, claims, build.IdempotencyTTL)
	}
	if err != nil {
		s.obs.Published(time.Since(start)) // failures are timed too
		return "", false, fmt.Errorf("enqueue build %s of %s: %w", req.BuildID, req.LockKey(), err)
	}
	if owner == req.BuildID {
		s.obs.Published(time.Since(start))
	} else {
		first = false
		req.BuildID = owner
		req.RequestedAt = owner.Time()
		if req.RequestedAt.IsZero() {
			req.RequestedAt = s.now().UTC()
		}
	}
	log = log.With("build_id", req.BuildID)
	if !first {
		if err := s.republish(ctx, log, req); err != nil {
			if errors.Is(err, errReplay) {
				return req.BuildID, false, nil
			}
			return "", false, err
		}
	}
	if first {
		s.obs.BuildQueued(req.Trigger)
		log.Info("build queued", "trigger", req.Trigger)
		s.notify(build.RecordFor(req), Notifier.BuildQueued)
		if policy.Queued && !policy.Running {
			s.obs.Superseded(len(superseded), 0)
			for _, id := range superseded {
				log.Info("request superseded", "superseded", id)
			}
		} else {
			s.supersedeOlder(ctx, log, build.RecordFor(req), policy)
		}
	} else {
		log.Info("redelivery answered with the delivery's first build")
	}
	return req.BuildID, first, nil
}

// errReplay: republish found the push accepted under another delivery.
var errReplay = errors.New("a replay of a push accepted under another delivery")

// republish answers a redelivery of an accepted request, req carrying its
// first build's ID: it records that build if its record is missing and
// publishes it again (the queue's deduplication drops a second message
// within its window), since the first attempt may have failed after its
// claims. A push accepted under another delivery is a replay: errReplay,
// nothing published.
func (s *Server) republish(ctx context.Context, log *slog.Logger, req build.Request) error {
	if rec, err := s.deps.Records.Get(ctx, req.BuildID); errors.Is(err, build.ErrNotFound) {
		if err := s.deps.Records.Save(ctx, build.RecordFor(req)); err != nil && !errors.Is(err, build.ErrConflict) {
			return fmt.Errorf("record %s: %w", req.BuildID, err)
		}
	} else if err != nil {
		return fmt.Errorf("get record %s: %w", req.BuildID, err)
	} else if rec.DeliveryID != req.DeliveryID {
		// Its build exists and was queued under its own delivery;
		// publishing again would only let every replay cost the queue a
		// message.
		log.Warn("replayed push answered with its first build", "first_delivery_id", rec.DeliveryID)
		return errReplay
	}
	start := time.Now()
	err := s.deps.Publisher.Publish(ctx, req)
	s.obs.Published(time.Since(start))
	if err != nil {
		return fmt.Errorf("publish build %s of %s: %w", req.BuildID, req.LockKey(), err)
	}
	return nil
}

// supersedePolicy is what a new request of req's project ends of the
// older requests of its lock key: nothing when the project is not
// buildable any more (the dispatcher drops them all).
func (s *Server) supersedePolicy(req build.Request) build.SupersedePolicy {
	desc, _, err := s.deps.Catalog.Lookup(req.Team, req.Project)
	if err != nil {
		return build.SupersedePolicy{}
	}
	return desc.SupersedeFor(req.Ref)
}

// supersedeOlder ends the older requests of rec's lock key that rec, a
// request just queued, makes unnecessary, as its project's supersede says
// (internal/supersede). It runs after the publish, so that a request is
// never superseded by one that did not reach the queue. A failure costs
// only build time (the older requests run) and is logged here.
func (s *Server) supersedeOlder(ctx context.Context, log *slog.Logger, rec build.Record, policy build.SupersedePolicy) {
	if !policy.Any() {
		return
	}
	res, err := supersede.Older(ctx, s.deps.Records, rec, policy, s.now().UTC())
	s.obs.Superseded(len(res.Superseded), len(res.Stopping))
	for _, id := range res.Superseded {
		log.Info("request superseded", "superseded", id)
	}
	for _, id := range res.Stopping {
		log.Info("running build superseded; the reaper stops it", "superseded", id)
	}
	if err != nil {
		log.Warn("supersede older requests", "err", err)
	}
}
