package ingest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// averageOver is how many successful builds the progress estimate averages.
const averageOver = 10

func (s *Server) teams(c echo.Context) error {
	seen := map[string]bool{}
	for _, p := range s.deps.Catalog.Projects() {
		seen[p.Team] = true
	}
	keys, err := s.deps.Records.Projects(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list projects with builds: %w", err)
	}
	for _, k := range keys {
		if team, _, ok := cutKey(k); ok {
			seen[team] = true
		}
	}
	teams := make([]string, 0, len(seen))
	for t := range seen {
		teams = append(teams, t)
	}
	slices.Sort(teams)
	return c.JSON(http.StatusOK, api.Teams{Teams: teams})
}

func cutKey(key string) (team, project string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", "", false
}

func (s *Server) projects(c echo.Context) error {
	ps := s.deps.Catalog.Projects()
	if team := c.QueryParam("team"); team != "" {
		ps = slices.DeleteFunc(slices.Clone(ps), func(p build.Project) bool { return p.Team != team })
	}
	out := api.Projects{Projects: make([]api.Project, 0, len(ps))}
	for _, p := range ps {
		out.Projects = append(out.Projects, api.ProjectOf(p))
	}
	if c.QueryParam("team") == "" {
		out.Skipped = s.deps.Catalog.Skipped()
	}
	return c.JSON(http.StatusOK, out)
}

// pathProject validates :team and :project.
func pathProject(c echo.Context) (team, project string, err error) {
	if team, err = pathValue(c, "team"); err != nil {
		return "", "", err
	}
	if project, err = pathValue(c, "project"); err != nil {
		return "", "", err
	}
	if err := build.ValidateName("team", team); err != nil {
		return "", "", err
	}
	if err := build.ValidateName("project", project); err != nil {
		return "", "", err
	}
	return team, project, nil
}

func (s *Server) projectBuilds(c echo.Context) error {
	team, project, err := pathProject(c)
	if err != nil {
		return err
	}
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return fmt.Errorf("%w: limit must be a number from 1 to 200", build.ErrInvalid)
		}
		limit = n
	}
	ctx := c.Request().Context()
	recs, next, err := s.deps.Records.ListProject(ctx, team, project, limit, c.QueryParam("cursor"))
	if err != nil {
		return fmt.Errorf("list builds of %s: %w", build.ProjectKey(team, project), err)
	}
	avg, n, err := s.deps.Records.AverageDuration(ctx, team, project, averageOver)
	if err != nil {
		return fmt.Errorf("average duration of %s: %w", build.ProjectKey(team, project), err)
	}
	page := api.BuildPage{Builds: s.buildsOf(recs), NextCursor: next}
	if n > 0 {
		page.AverageDurationSeconds = avg.Seconds()
	}
	return c.JSON(http.StatusOK, page)
}

// lookupProject checks that the catalog has a buildable team/project:
// build.ErrNotFound (404) if it is unknown, 422 if it is not buildable.
func (s *Server) lookupProject(team, project string) error {
	_, _, err := s.deps.Catalog.Lookup(team, project)
	switch {
	case errors.Is(err, build.ErrInvalid):
		// The catalog's error names the project and why it is not buildable.
		return &publicError{status: http.StatusUnprocessableEntity, msg: catalogReason(err), cause: err}
	case errors.Is(err, build.ErrNotFound):
		return &publicError{status: http.StatusNotFound, msg: notInCatalog(team, project), cause: err}
	case err != nil:
		return fmt.Errorf("project %s: %w", build.ProjectKey(team, project), err)
	}
	return nil
}

// catalogReason is the message of a catalog error without build's
// "invalid: ": "project X is not buildable: project.json: …".
func catalogReason(err error) string {
	return strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": ")
}

// decodeStrict decodes body, one JSON object, into v: unknown fields and
// data after the object are ErrInvalid, the error showing example.
func decodeStrict(body []byte, v any, example string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body must be JSON like %s: %v", build.ErrInvalid, example, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: body has data after the JSON object", build.ErrInvalid)
	}
	return nil
}

// notInCatalog says that team/project is no project of the catalog.
func notInCatalog(team, project string) string {
	return "project " + build.ProjectKey(team, project) + " is not in the build-scripts repository"
}

func (s *Server) requestBuild(c echo.Context) error {
	team, project, err := pathProject(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var in api.BuildRequest
	if err := decodeStrict(body, &in, `{"ref": "main"}`); err != nil {
		return err
	}
	// "refs/heads/main" builds branch main under main's lock key, as a
	// push of it does.
	if in.Ref, in.RefType, err = build.NormalizeRef(in.Ref, in.RefType); err != nil {
		return err
	}
	if in.RefType == "" {
		in.RefType = build.Branch
	}
	if err := s.lookupProject(team, project); err != nil {
		return err
	}
	now := s.now().UTC()
	// A person in the UI builds by hand; anything else with the token is
	// another program.
	trigger := build.TriggerAPI
	if actor(c) == actorUI {
		trigger = build.TriggerManual
	}
	req := build.Request{
		V: build.MessageVersion, BuildID: build.NewID(now), Team: team, Project: project,
		Ref: in.Ref, RefType: in.RefType, SHA: in.SHA, Trigger: trigger,
		RequestedBy: actor(c), RequestedAt: now,
	}
	if err := req.Validate(); err != nil {
		return err
	}
	id, _, err := s.enqueue(c.Request().Context(), req, "")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, s.numbered(c.Request().Context(), api.Queued{ID: id, LockKey: req.LockKey()}))
}

func (s *Server) record(c echo.Context) (build.Record, error) {
	id, err := build.ParseID(c.Param("id"))
	if err != nil {
		return build.Record{}, err
	}
	rec, err := s.deps.Records.Get(c.Request().Context(), id)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return build.Record{}, &publicError{status: http.StatusNotFound, msg: "build " + string(id) + " not found", cause: err}
	case err != nil:
		return build.Record{}, fmt.Errorf("build %s: %w", id, err)
	}
	return rec, nil
}

func (s *Server) getBuild(c echo.Context) error {
	rec, err := s.record(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.buildOf(rec))
}

// buildLog serves the console log as text: the stored log of an ended
// build, or what a running build has written so far. With follow=1 it
// streams until the build ends, or for Limits.FollowFor at most; the
// follows open at once are limited (Limits.Followers, ClientFollowers).
// With times=1 it answers when the log's lines began instead (logTimes).
func (s *Server) buildLog(c echo.Context) error {
	rec, err := s.record(c)
	if err != nil {
		return err
	}
	switch c.QueryParam("times") {
	case "":
	case "1", "true":
		return s.logTimes(c, rec)
	default:
		return fmt.Errorf("%w: times must be 1 (the log's line times) or absent (the log)", build.ErrInvalid)
	}
	ctx := c.Request().Context()
	follow := c.QueryParam("follow") == "1" || c.QueryParam("follow") == "true"
	tail, err := tailParam(c)
	if err != nil {
		return err
	}
	if tail > 0 {
		follow = false
	}
	if rec.LogKey == "" && s.deps.LiveLogs != nil && (follow || rec.Status == build.StatusRunning) {
		if !rec.Status.Final() && follow {
			release, err := s.edge.followers.acquire(clientKey(c), 1)
			if err != nil {
				return s.tooMany(c, err, "log follows", RejectFollowerClient, RejectFollowerServer)
			}
			defer release()
			return s.followLog(c, rec)
		}
		if live, err := s.deps.LiveLogs.OpenLiveLog(rec.BuildID); err == nil {
			defer live.Close()
			if tail > 0 {
				return s.streamTail(c, live, tail)
			}
			return s.stream(c, echo.MIMETextPlainCharsetUTF8, live)
		}
	}
	if rec.LogKey == "" {
		return fmt.Errorf("%w: build %s has no stored log (status %s)", build.ErrNotFound, rec.BuildID, rec.Status)
	}
	obj, err := s.deps.Blobs.Open(ctx, rec.LogKey)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", rec.BuildID, err)
	}
	defer obj.Close()
	zr, err := gzip.NewReader(bufio.NewReader(obj))
	if err != nil {
		return fmt.Errorf("log of %s is not gzip: %w", rec.BuildID, err)
	}
	defer zr.Close()
	if tail > 0 {
		return s.streamTail(c, zr, tail)
	}
	return s.stream(c, echo.MIMETextPlainCharsetUTF8, zr)
}

// maxLogTail bounds ?tail=: one answer holds up to twice that in memory
// while it reads the log through; at most maxLogTails are read at once
// (more wait their turn), so tails hold at most 8*maxLogTail bytes.
const (
	maxLogTail  = 4 << 20
	maxLogTails = 4
)

// tailParam reads ?tail=<bytes> of GET .../log: 0 when absent.
func tailParam(c echo.Context) (int, error) {
	v := c.QueryParam("tail")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLogTail {
		return 0, fmt.Errorf("%w: tail must be a number of bytes from 1 to %d", build.ErrInvalid, maxLogTail)
	}
	return n, nil
}

// Headers of a log's tail (?tail=): how many bytes and lines of the log
// come before it. Both are 0 when the answer is the whole log.
const (
	headerLogSkippedBytes = "X-Decap-Log-Skipped-Bytes"
	headerLogSkippedLines = "X-Decap-Log-Skipped-Lines"
)

// streamTail answers the last n bytes of r or fewer, from the start of a
// line, reading r to its end with no more than 2n bytes in memory (a log
// of 50 MB is read, not held).
func (s *Server) streamTail(c echo.Context, r io.Reader, n int) error {
	select {
	case s.tails <- struct{}{}:
	case <-c.Request().Context().Done():
		return c.Request().Context().Err()
	}
	tail, skippedBytes, skippedLines, err := logTail(r, n)
	<-s.tails
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	h := c.Response().Header()
	h.Set(headerLogSkippedBytes, strconv.FormatInt(skippedBytes, 10))
	h.Set(headerLogSkippedLines, strconv.FormatInt(skippedLines, 10))
	return s.stream(c, echo.MIMETextPlainCharsetUTF8, bytes.NewReader(tail))
}

// logTail returns the last n bytes of r or fewer, starting after a line
// break unless nothing was dropped, and how many bytes and lines (line
// breaks) came before them.
func logTail(r io.Reader, n int) (tail []byte, skippedBytes, skippedLines int64, err error) {
	buf := make([]byte, 0, 2*n+32<<10)
	chunk := make([]byte, 32<<10)
	var before byte // the last byte dropped
	drop := func(k int) {
		skippedBytes += int64(k)
		skippedLines += int64(bytes.Count(buf[:k], []byte{'\n'}))
		before = buf[k-1]
		buf = buf[:copy(buf, buf[k:])]
	}
	for {
		m, rerr := r.Read(chunk)
		buf = append(buf, chunk[:m]...)
		if len(buf) > 2*n {
			drop(len(buf) - n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, 0, 0, rerr
		}
	}
	if len(buf) > n {
		drop(len(buf) - n)
	}
	// Start at a whole line: drop the rest of a line cut in two.
	if skippedBytes > 0 && before != '\n' {
		// A line longer than n stays, in part.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			drop(i + 1)
		}
	}
	return buf, skippedBytes, skippedLines, nil
}

// followLog streams a running (or still queued) build's log as it grows,
// until the build's record is final and the log is read to its end, or
// Limits.FollowFor has passed. The build's record is polled once for all
// its followers (followHub); each write gets a deadline of its own, so
// that the server's write timeout does not cut a long follow off.
func (s *Server) followLog(c echo.Context, rec build.Record) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.edge.limits.FollowFor)
	defer cancel()
	sub := s.edge.follows.join(rec)
	defer s.edge.follows.leave(sub)
	w := c.Response()
	rc := http.NewResponseController(w)
	w.Header().Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.extendWrite(rc)
	// The end of the answer is written after a wait that may be longer than
	// a chunk's deadline (a build queued or silent for minutes, FollowFor):
	// with a deadline of its own, or the client reads an error, not the end.
	defer s.extendWrite(rc)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil // the client went away
	}
	var live io.ReadCloser
	defer func() {
		if live != nil {
			live.Close()
		}
	}()
	var buf []byte // made with the live log: a build that waits needs none
	follower, follows := s.deps.LiveLogs.(LogFollower)
	for {
		// A build that has not started has no live log: asking the
		// executor for it on every poll of every follower would only cost
		// it calls.
		waiting := rec.Status == build.StatusQueued || rec.Status == build.StatusDeferred
		if live == nil && !waiting {
			var f io.ReadCloser
			var err error
			if follows {
				f, err = follower.FollowLiveLog(ctx, rec.BuildID)
			} else {
				f, err = s.deps.LiveLogs.OpenLiveLog(rec.BuildID)
			}
			if err == nil {
				live, buf = f, make([]byte, 8<<10)
			}
		}
		if live != nil {
			// A followed stream blocks in Read until more is written, so
			// every chunk is flushed as it comes.
			for {
				n, err := live.Read(buf)
				if n > 0 {
					s.extendWrite(rc)
					if _, werr := w.Write(buf[:n]); werr != nil {
						return nil // the client went away
					}
					if werr := rc.Flush(); werr != nil {
						return nil
					}
				}
				if err != nil || n == 0 {
					break
				}
			}
		}
		if rec.Status.Final() {
			if live == nil && rec.LogKey != "" {
				return s.copyStoredLog(c, rec)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // the client went away, or FollowFor passed: it reconnects
		case <-sub.next():
		}
		rec = sub.record()
	}
}

func (s *Server) copyStoredLog(c echo.Context, rec build.Record) error {
	obj, err := s.deps.Blobs.Open(c.Request().Context(), rec.LogKey)
	if err != nil {
		return nil // headers are sent; the stream just ends
	}
	defer obj.Close()
	zr, err := gzip.NewReader(obj)
	if err != nil {
		return nil
	}
	defer zr.Close()
	_ = s.copyChunks(c.Response(), zr)
	return nil
}

// stream answers 200 with r's content, each chunk with a write deadline
// of its own (see copyChunks).
func (s *Server) stream(c echo.Context, contentType string, r io.Reader) error {
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, contentType)
	w.WriteHeader(http.StatusOK)
	return s.copyChunks(w, r)
}

// copyChunks copies r to w, giving each chunk Limits.StreamWriteTimeout
// to be written: a long download is bounded by its progress, not by the
// server's write timeout, and a client that stops reading is cut off.
func (s *Server) copyChunks(w *echo.Response, r io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.extendWrite(rc)
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// extendWrite gives the next write Limits.StreamWriteTimeout. A writer
// without deadlines (a test's recorder) is left as it is.
func (s *Server) extendWrite(rc *http.ResponseController) {
	_ = rc.SetWriteDeadline(time.Now().Add(s.edge.limits.StreamWriteTimeout))
}

func (s *Server) buildArtifacts(c echo.Context) error {
	rec, err := s.record(c)
	if err != nil {
		return err
	}
	if rec.ArtifactsKey == "" {
		return fmt.Errorf("%w: build %s has no stored artifacts (status %s)", build.ErrNotFound, rec.BuildID, rec.Status)
	}
	obj, err := s.deps.Blobs.Open(c.Request().Context(), rec.ArtifactsKey)
	if err != nil {
		return fmt.Errorf("open artifacts of %s: %w", rec.BuildID, err)
	}
	defer obj.Close()
	br := bufio.NewReaderSize(obj, artifactsPeek)
	head, err := br.Peek(artifactsPeek)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("read artifacts of %s: %w", rec.BuildID, err)
	}
	if emptyTarball(head) {
		return fmt.Errorf("%w: build %s left no artifacts (its $BUILD_ARTIFACTS was empty)", build.ErrNotFound, rec.BuildID)
	}
	c.Response().Header().Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", string(rec.BuildID)+"-artifacts.tar.gz"))
	if c.Request().Method == http.MethodHead {
		c.Response().Header().Set(echo.HeaderContentType, "application/gzip")
		return c.NoContent(http.StatusOK)
	}
	return s.stream(c, "application/gzip", br)
}

// artifactsPeek is how much of an artifacts tarball is read to tell an
// empty one: a gzipped tar without entries is a few dozen bytes.
const artifactsPeek = 4 << 10

// emptyTarball reports whether head, the start of a gzipped tarball, is a
// whole tarball without a single entry. A start it cannot read (another
// format, a cut-off stream) is not empty.
func emptyTarball(head []byte) bool {
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return false
	}
	_, err = tar.NewReader(zr).Next()
	return err == io.EOF
}

// buildOf is a record as the API answers it: without its podName where
// the executor runs no Pods (Config.NoPodNames).
func (s *Server) buildOf(r build.Record) api.Build {
	b := api.BuildOf(r)
	if s.cfg.NoPodNames {
		b.PodName = ""
	}
	return b
}

func (s *Server) buildsOf(recs []build.Record) []api.Build {
	out := api.BuildsOf(recs)
	if s.cfg.NoPodNames {
		for i := range out {
			out[i].PodName = ""
		}
	}
	return out
}
