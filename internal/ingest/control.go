package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// The control plane of the JSON API: refs, cancel, queue, locks and the
// dispatch gate.

// refsTimeout bounds one call to the repository manager.
const refsTimeout = 20 * time.Second

// maxPauseReason bounds the reason given for pausing dispatch, in bytes.
const maxPauseReason = 500

// pathValue returns the path parameter name, percent-decoded. Echo matches
// on the raw path when the request's path has escapes (such as %2F), and
// then hands out parameters still escaped.
func pathValue(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("%w: path parameter %s is not properly escaped", build.ErrInvalid, name)
	}
	return u, nil
}

// projectRefs handles GET /api/v1/projects/:team/:project/refs: the
// project's branches and tags, from its repository manager.
func (s *Server) projectRefs(c echo.Context) error {
	team, project, err := pathProject(c)
	if err != nil {
		return err
	}
	if err := s.lookupProject(team, project); err != nil {
		return err
	}
	if s.deps.Refs == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no repository manager configured")
	}
	key := build.ProjectKey(team, project)
	ctx, cancel := context.WithTimeout(c.Request().Context(), refsTimeout)
	defer cancel()
	branches, tags, err := s.deps.Refs.Refs(ctx, team, project)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return fmt.Errorf("repository of %s at its repository manager: %w", key, err)
	case errors.Is(err, build.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &publicError{status: http.StatusServiceUnavailable,
			msg: "the repository manager is unavailable, try again later (listing the refs of " + key + ")", cause: err}
	case err != nil:
		return &publicError{status: http.StatusBadGateway,
			msg: "the repository manager failed to list the refs of " + key, cause: err}
	}
	if branches == nil {
		branches = []RefInfo{}
	}
	if tags == nil {
		tags = []RefInfo{}
	}
	return c.JSON(http.StatusOK, api.Refs{Branches: branches, Tags: tags})
}

// cancelBuild handles DELETE /api/v1/builds/:id. A waiting (queued or
// deferred) build is recorded as cancelled at once, and the dispatcher drops
// its request when it meets the final record: 200 with the record. For a
// running build the Canceller records the request (Record.RequestCancel)
// and the reaper stops the build, whatever the executor: 202. An ended
// build: 409.
func (s *Server) cancelBuild(c echo.Context) error {
	rec, err := s.record(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	by := actor(c)
	log := s.recordLog(rec)
	switch rec.Status {
	case build.StatusRunning:
		if s.deps.Canceller == nil {
			return echo.NewHTTPError(http.StatusNotImplemented, "no executor configured that could cancel running builds")
		}
		if err := s.deps.Canceller.Cancel(ctx, rec.BuildID); errors.Is(err, build.ErrNotFound) {
			return s.ended(ctx, rec)
		} else if err != nil {
			return err
		}
		log.Info("build cancelling", "by", by)
		return c.JSON(http.StatusAccepted, api.Cancelling{ID: rec.BuildID, Status: "cancelling"})
	case build.StatusQueued, build.StatusDeferred:
		if err := rec.Cancel(s.now().UTC(), by); err != nil {
			return err
		}
		if err := s.deps.Records.Save(ctx, rec); errors.Is(err, build.ErrConflict) {
			return s.ended(ctx, rec) // it ended meanwhile
		} else if err != nil {
			return fmt.Errorf("record %s as cancelled: %w", rec.BuildID, err)
		}
		// A dispatcher that read the request as waiting just before may
		// have launched it anyway: it stops the build when its running
		// record is refused, or the reaper's reconciliation does when this
		// record replaced that one. Its end cannot replace this record.
		log.Info("build cancelled before it started", "by", by)
		s.notify(rec, Notifier.BuildEnded)
		return c.JSON(http.StatusOK, s.buildOf(rec))
	default:
		return alreadyEnded(rec)
	}
}

// ended answers a cancel that found the build no longer running or
// waiting: 409, with the final status when the record has one.
func (s *Server) ended(ctx context.Context, rec build.Record) error {
	now, err := s.deps.Records.Get(ctx, rec.BuildID)
	if err != nil {
		return fmt.Errorf("build %s: %w", rec.BuildID, err)
	}
	if now.Status.Final() {
		return alreadyEnded(now)
	}
	return echo.NewHTTPError(http.StatusConflict,
		fmt.Sprintf("build %s is no longer running; its outcome is being recorded", rec.BuildID))
}

func alreadyEnded(rec build.Record) error {
	return echo.NewHTTPError(http.StatusConflict,
		fmt.Sprintf("build %s already %s", rec.BuildID, strings.ReplaceAll(string(rec.Status), "_", " ")))
}

// Paging of GET /api/v1/queue's waiting requests.
const (
	defaultWaitingListed = 100
	maxWaitingListed     = 1000
	maxWaitingOffset     = 1_000_000
)

// queue handles GET /api/v1/queue: the queue's counts and the requests
// waiting to start, oldest first, deferred ones with reason and next
// attempt: a page of them (?offset=, ?limit=; 100 by default, at most
// 1000), with how many wait in all.
func (s *Server) queue(c echo.Context) error {
	if s.deps.Queue == nil || s.deps.Waiting == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no queue listing configured")
	}
	offset, err := intParam(c, "offset", 0, 0, maxWaitingOffset)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", defaultWaitingListed, 1, maxWaitingListed)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	stats, err := s.deps.Queue.Stats(ctx)
	if err != nil {
		return fmt.Errorf("queue stats: %w", err)
	}
	recs, total, err := s.deps.Waiting.Waiting(ctx, offset, limit)
	if err != nil {
		return fmt.Errorf("list waiting requests: %w", err)
	}
	out := api.Queue{Stats: stats, Waiting: make([]api.Waiting, 0, len(recs)), WaitingTotal: total}
	for _, r := range recs {
		out.Waiting = append(out.Waiting, api.WaitingOf(r))
	}
	return c.JSON(http.StatusOK, out)
}

// listBuilds handles GET /api/v1/builds?status=running: the records of the
// builds that run now, across every project, the earliest started first.
// They come from the records, not the locks: a build whose lock was
// force-released still runs and is listed. status=running is required;
// a project's history is GET /api/v1/projects/{team}/{project}/builds.
func (s *Server) listBuilds(c echo.Context) error {
	if st := c.QueryParam("status"); st != string(build.StatusRunning) {
		return fmt.Errorf("%w: list builds by status=running (a project's builds: /api/v1/projects/{team}/{project}/builds), not status=%q",
			build.ErrInvalid, truncate(st, 40))
	}
	if s.deps.Running == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no listing of running builds configured")
	}
	recs, err := s.deps.Running.Running(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list running builds: %w", err)
	}
	slices.SortFunc(recs, func(a, b build.Record) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(string(a.BuildID), string(b.BuildID))
	})
	return c.JSON(http.StatusOK, api.BuildList{Builds: s.buildsOf(recs)})
}

// lockKeyParam returns the lock key of /locks/:team/:project/*; the ref
// may contain slashes. Hostile names are build.ErrInvalid (400).
func lockKeyParam(c echo.Context) (string, error) {
	team, project, err := pathProject(c)
	if err != nil {
		return "", err
	}
	ref, err := pathValue(c, "*")
	if err != nil {
		return "", err
	}
	key := build.LockKey(team, project, ref)
	if _, _, _, err := build.SplitLockKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// locks handles GET /api/v1/locks: every held lock, ordered by key.
func (s *Server) locks(c echo.Context) error {
	if s.deps.Locks == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no lock store configured")
	}
	leases, err := s.deps.Locks.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list locks: %w", err)
	}
	if leases == nil {
		leases = []build.Lease{}
	}
	return c.JSON(http.StatusOK, api.Locks{Locks: leases})
}

// lock handles GET /api/v1/locks/:team/:project/:ref: the lease, or 404.
func (s *Server) lock(c echo.Context) error {
	key, err := lockKeyParam(c)
	if err != nil {
		return err
	}
	if s.deps.Locks == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no lock store configured")
	}
	leases, err := s.deps.Locks.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list locks: %w", err)
	}
	for _, l := range leases {
		if l.Key == key {
			return c.JSON(http.StatusOK, l)
		}
	}
	return fmt.Errorf("lock %s: %w (nobody holds it)", key, build.ErrNotFound)
}

// releaseLock handles DELETE /api/v1/locks/:team/:project/:ref: drop the
// lock whoever holds it (an operator's unlock), or 404.
func (s *Server) releaseLock(c echo.Context) error {
	key, err := lockKeyParam(c)
	if err != nil {
		return err
	}
	if s.deps.Locks == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no lock store configured")
	}
	if err := s.deps.Locks.ForceRelease(c.Request().Context(), key); errors.Is(err, build.ErrNotFound) {
		return fmt.Errorf("lock %s: %w (nobody holds it)", key, build.ErrNotFound)
	} else if err != nil {
		return err
	}
	s.log.Info("lock force-released", "lock_key", key, "by", actor(c))
	return c.JSON(http.StatusOK, api.Released{Released: key})
}

// dispatchGate handles GET /api/v1/dispatch: the dispatch gate.
func (s *Server) dispatchGate(c echo.Context) error {
	if s.deps.Gate == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no dispatch gate configured")
	}
	g, err := s.deps.Gate.Get(c.Request().Context())
	if err != nil {
		return fmt.Errorf("read the dispatch gate: %w", err)
	}
	return c.JSON(http.StatusOK, g)
}

// pauseDispatch handles POST /api/v1/dispatch/pause: close the gate, so
// dispatchers take nothing off the queue until it is resumed.
func (s *Server) pauseDispatch(c echo.Context) error {
	if s.deps.Gate == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no dispatch gate configured")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var in api.Pause
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return fmt.Errorf("%w: body must be empty or JSON like {\"reason\": \"...\"}: %v", build.ErrInvalid, err)
		}
	}
	in.Reason = strings.TrimSpace(in.Reason)
	switch {
	case len(in.Reason) > maxPauseReason:
		return fmt.Errorf("%w: reason is longer than %d bytes", build.ErrInvalid, maxPauseReason)
	case !utf8.ValidString(in.Reason), strings.ContainsFunc(in.Reason, unicode.IsControl):
		return fmt.Errorf("%w: reason must be UTF-8 text without control characters", build.ErrInvalid)
	}
	g := build.GateState{Paused: true, Reason: in.Reason, By: actor(c), Since: s.now().UTC()}
	if err := s.deps.Gate.Set(c.Request().Context(), g); err != nil {
		return fmt.Errorf("pause dispatch: %w", err)
	}
	s.log.Warn("dispatch paused", "by", g.By, "reason", g.Reason)
	return c.JSON(http.StatusOK, g)
}

// resumeDispatch handles POST /api/v1/dispatch/resume: open the gate.
func (s *Server) resumeDispatch(c echo.Context) error {
	if s.deps.Gate == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no dispatch gate configured")
	}
	var open build.GateState
	if err := s.deps.Gate.Set(c.Request().Context(), open); err != nil {
		return fmt.Errorf("resume dispatch: %w", err)
	}
	s.log.Info("dispatch resumed", "by", actor(c))
	return c.JSON(http.StatusOK, open)
}

// intParam reads the integer query parameter name: def when absent, a
// build.ErrInvalid error (400) unless it is from min to max.
func intParam(c echo.Context, name string, def, min, max int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%w: %s must be a number from %d to %d", build.ErrInvalid, name, min, max)
	}
	return n, nil
}
