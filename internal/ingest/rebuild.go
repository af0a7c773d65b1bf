package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// rebuildBuild handles POST /api/v1/builds/:id/rebuild: the build's
// project, ref and SHA queued again as a new build, whose record names the
// first (RebuildOf), through the same path as any API build request; its
// trigger and requestedBy say who asked, as for POST .../builds. 202 with
// the new build's ID, lock key and number. An unknown build is 404. A build
// that has not ended is 409: a rebuild is asked of an outcome, and a newer
// request of the same lock key would supersede a waiting build (and, where
// the project supersedes running builds, stop a running one) instead of
// building it twice. A build whose project is no longer buildable (gone
// from the build-scripts repository, or its project.json invalid) is 422.
//
// A build recorded without a SHA (a request for "whatever the ref points
// at") is rebuilt the same way: the ref's commit at the new build's
// checkout, which may be another commit.
func (s *Server) rebuildBuild(c echo.Context) error {
	orig, err := s.record(c)
	if err != nil {
		return err
	}
	if !orig.Status.Final() {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf(
			"build %s is %s; rebuild it once it has ended, or cancel it", orig.BuildID, strings.ReplaceAll(string(orig.Status), "_", " ")))
	}
	if _, _, err := s.deps.Catalog.Lookup(orig.Team, orig.Project); errors.Is(err, build.ErrNotFound) {
		return echo.NewHTTPError(http.StatusUnprocessableEntity, fmt.Sprintf(
			"build %s cannot be rebuilt: project %s is not buildable any more: it is not in the build-scripts repository", orig.BuildID, orig.ProjectKey()))
	} else if errors.Is(err, build.ErrInvalid) {
		// The catalog's error: "project X is not buildable: project.json: …".
		why := strings.TrimPrefix(catalogReason(err), "project "+orig.ProjectKey()+" is not buildable: ")
		return echo.NewHTTPError(http.StatusUnprocessableEntity, fmt.Sprintf(
			"build %s cannot be rebuilt: project %s is not buildable any more: %s", orig.BuildID, orig.ProjectKey(), why))
	} else if err != nil {
		return fmt.Errorf("look up %s: %w", orig.ProjectKey(), err)
	}
	now := s.now().UTC()
	trigger := build.TriggerAPI
	if actor(c) == actorUI {
		trigger = build.TriggerManual
	}
	refType := orig.RefType
	if refType == "" {
		refType = build.Branch // a record made from an outcome alone
	}
	req := build.Request{
		V: build.MessageVersion, BuildID: build.NewID(now), Team: orig.Team, Project: orig.Project,
		Ref: orig.Ref, RefType: refType, SHA: orig.SHA, Trigger: trigger,
		RequestedBy: actor(c), RequestedAt: now, RebuildOf: orig.BuildID,
	}
	if p := orig.PullRequest; p != nil {
		// The same pull request, as trusted as it was: a rebuild of an
		// untrusted build gets no secrets either.
		pr := *p
		req.PullRequest = &pr
	}
	if err := req.Validate(); err != nil {
		// The record holds what no request may (another producer's, or an
		// older version's): nothing the asker can fix.
		return echo.NewHTTPError(http.StatusUnprocessableEntity, fmt.Sprintf("build %s cannot be rebuilt: %v", orig.BuildID, err))
	}
	ctx := c.Request().Context()
	id, _, err := s.enqueue(ctx, req, "")
	if err != nil {
		return err
	}
	s.recordLog(orig).Info("build rebuilt", "rebuild_id", id, "by", actor(c))
	return c.JSON(http.StatusAccepted, s.numbered(ctx, api.Queued{ID: id, LockKey: req.LockKey()}))
}

// numbered returns q with the number its record was given, read back after
// enqueue; without it when the read fails (the build is queued whatever
// this read says, so its failure is only logged).
func (s *Server) numbered(ctx context.Context, q api.Queued) api.Queued {
	rec, err := s.deps.Records.Get(ctx, q.ID)
	if err != nil {
		s.log.Warn("read the number of a queued build", "build_id", q.ID, "lock_key", q.LockKey, "err", err)
		return q
	}
	q.Number = rec.Number
	return q
}
