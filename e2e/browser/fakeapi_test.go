package browser_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ui"
)

// TestBrowserFakeAPI runs the browser flow against the UI mounted on an
// echo server whose JSON API is fakeAPI below: the same contract as
// ingest's (session cookie, X-Decap-CSRF, refs, build requests, log
// follow, artifacts, cancel), kept small and in-process.
func TestBrowserFakeAPI(t *testing.T) {
	requireBrowser(t)
	api := newFakeAPI(t)
	srv := httptest.NewServer(api.e)
	t.Cleanup(srv.Close)
	runFlow(t, target{
		base:          srv.URL,
		token:         apiToken,
		quick:         "decap-ci/hello",
		slow:          "decap-ci/slow",
		quickLastLine: "hello: all done",
		artifactName:  "result.txt",
		slowLine:      "slow tick 3",
		shots:         filepath.Join(moduleRoot, "test-output", "browser", "fake-api"),
		paging:        true,
	})
}

// fakeAPI stands in for ingest's JSON API over the buildtest fakes, and
// "runs" builds as goroutines that write log lines.
type fakeAPI struct {
	e       *echo.Echo
	records *buildtest.FakeRecords
	locks   *buildtest.FakeLocks
	gate    *buildtest.FakeGate

	mu       sync.Mutex
	sessions map[string]bool
	runs     map[build.ID]*fakeRun
}

// fakeRun is one build's log and cancellation.
type fakeRun struct {
	mu     sync.Mutex
	log    []byte
	cancel chan struct{}
	once   sync.Once
}

func (r *fakeRun) logFrom(off int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.log[min(off, len(r.log)):])
}

// fakeScripts are the fake builds: lines printed one per interval.
var fakeScripts = map[string]struct {
	lines []string
	every time.Duration
}{
	"decap-ci/hello": {[]string{"--- compile", "\x1b[1;32mcompiled\x1b[0m with <b>markup</b> & \x1b]0;title\x07escapes",
		"::group::steps", "hello: compile", "hello: test", "::endgroup::", "--- package", "hello: package", "hello: all done"}, 250 * time.Millisecond},
	"decap-ci/slow": {slowLines(), 500 * time.Millisecond},
}

func slowLines() []string {
	var out []string
	for i := 1; i <= 40; i++ {
		out = append(out, fmt.Sprintf("slow tick %d of 40", i))
	}
	return out
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	now := time.Now()
	f := &fakeAPI{
		e:        echo.New(),
		records:  buildtest.NewRecords(),
		locks:    buildtest.NewLocks(time.Now),
		gate:     buildtest.NewGate(),
		sessions: map[string]bool{},
		runs:     map[build.ID]*fakeRun{},
	}
	catalog := buildtest.NewCatalog("c0ffee", map[string]string{
		"decap-ci/hello":   `{"buildImage":"debian:bookworm-slim","repoUrl":"https://github.com/decap-ci/hello","repoDescription":"Hello, world"}`,
		"decap-ci/slow":    `{"buildImage":"debian:bookworm-slim","repoDescription":"takes its time"}`,
		"decap-ci/broken":  `{"buildImage":"debian:bookworm-slim","managedRefRegex":"(unclosed"}`,
		"ae6rt/dynamo-lab": `{"buildImage":"golang:1.26"}`,
	})
	// Some history, so that the pages have something to show.
	exit0, exit1 := 0, 1
	for i, h := range []struct {
		project, ref string
		status       build.Status
		took         time.Duration
	}{
		{"hello", "main", build.StatusSucceeded, 1400 * time.Millisecond},
		{"hello", "feature/login", build.StatusFailed, 900 * time.Millisecond},
		{"slow", "main", build.StatusSucceeded, 21 * time.Second},
		{"hello", "main", build.StatusSucceeded, 1600 * time.Millisecond},
	} {
		q := now.Add(-time.Duration(4-i) * 37 * time.Minute)
		r := build.Record{BuildID: build.NewID(q), Team: "decap-ci", Project: h.project, Ref: h.ref, RefType: build.Branch,
			SHA: fakeSHA(fmt.Sprint("history", i)), Trigger: build.TriggerPush, RequestedBy: "Codertocat", Status: h.status,
			QueuedAt: q, StartedAt: q.Add(time.Second), FinishedAt: q.Add(time.Second + h.took)}
		if h.status == build.StatusSucceeded {
			r.ExitCode = &exit0
		} else {
			r.ExitCode, r.Reason = &exit1, "build.sh exited with status 1"
		}
		f.records.Save(context.Background(), r)
	}
	// More history than a page of all builds holds: the flow pages.
	for i := range 30 {
		q := now.Add(-time.Duration(10+i) * time.Hour)
		f.records.Save(context.Background(), build.Record{BuildID: build.NewID(q), Team: "ae6rt", Project: "dynamo-lab",
			Ref: fmt.Sprintf("feature/%02d", i), RefType: build.Branch, Trigger: build.TriggerPush, RequestedBy: "octocat",
			Status: build.StatusSucceeded, ExitCode: &exit0, QueuedAt: q, StartedAt: q.Add(time.Second), FinishedAt: q.Add(40 * time.Second)})
	}
	f.records.Save(context.Background(), build.Record{BuildID: build.NewID(now), Team: "ae6rt", Project: "dynamo-lab", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerPush, Status: build.StatusDeferred, QueuedAt: now.Add(-2 * time.Minute),
		Reason: "concurrency cap reached (4)", NextAttemptAt: now.Add(10 * time.Minute)})

	ui.New(ui.Config{}, ui.Deps{Records: f.records, Catalog: catalog, Locks: f.locks, Gate: f.gate,
		Queue: buildtest.NewQueue(time.Now, buildtest.QueueOptions{})}).Register(f.e)
	f.e.HTTPErrorHandler = handleError
	api := f.e.Group("/api/v1")
	api.POST("/session", f.login)
	api.DELETE("/session", f.logout, f.auth)
	api.GET("/projects/:team/:project/refs", f.refs)
	api.POST("/projects/:team/:project/builds", f.requestBuild, f.auth)
	api.GET("/builds/:id", f.getBuild)
	api.GET("/builds/:id/log", f.buildLog)
	api.GET("/builds/:id/artifacts", f.artifacts)
	api.HEAD("/builds/:id/artifacts", f.artifacts)
	api.DELETE("/builds/:id", f.cancel, f.auth)
	// No build-event stream, as on a backend without one: the pages poll.
	api.GET("/events", func(echo.Context) error {
		return apiError(http.StatusNotImplemented, "this backend has no build event stream yet: poll /api/v1/builds")
	})
	api.POST("/dispatch/pause", f.pause, f.auth)
	api.POST("/dispatch/resume", f.resume, f.auth)
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.runs {
			r.once.Do(func() { close(r.cancel) })
		}
	})
	return f
}

// fakeSHA is a commit SHA made up from seed.
func fakeSHA(seed string) string {
	sum := sha1.Sum([]byte(seed))
	return hex.EncodeToString(sum[:])
}

// apiError is an error answer in ingest's shape (see handleError).
func apiError(status int, msg string) error { return echo.NewHTTPError(status, msg) }

func handleError(err error, c echo.Context) {
	status, msg := http.StatusInternalServerError, err.Error()
	if he, ok := err.(*echo.HTTPError); ok {
		status, msg = he.Code, fmt.Sprint(he.Message)
	}
	if !c.Response().Committed {
		c.JSON(status, map[string]any{"error": msg, "detail": map[string]int{"status": status}})
	}
}

// auth lets through the bearer token, or a session cookie with the CSRF
// header.
func (f *fakeAPI) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Header.Get("Authorization") == "Bearer "+apiToken {
			return next(c)
		}
		ck, err := c.Cookie("decap_session")
		f.mu.Lock()
		ok := err == nil && f.sessions[ck.Value]
		f.mu.Unlock()
		if !ok {
			return apiError(http.StatusUnauthorized, "unauthorized: sign in or send the API token")
		}
		if c.Request().Header.Get("X-Decap-CSRF") != "1" {
			return apiError(http.StatusForbidden, "the X-Decap-CSRF header is required")
		}
		return next(c)
	}
}

func (f *fakeAPI) login(c echo.Context) error {
	var in struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return apiError(http.StatusBadRequest, "body must be {\"token\": ...}")
	}
	if subtle.ConstantTimeCompare([]byte(in.Token), []byte(apiToken)) != 1 {
		return apiError(http.StatusUnauthorized, "unauthorized: wrong token")
	}
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	f.mu.Lock()
	f.sessions[id] = true
	f.mu.Unlock()
	c.SetCookie(&http.Cookie{Name: "decap_session", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return c.NoContent(http.StatusNoContent)
}

// logout ends the session on the server, as ingest does, and clears the
// cookie.
func (f *fakeAPI) logout(c echo.Context) error {
	if ck, err := c.Cookie("decap_session"); err == nil {
		f.mu.Lock()
		delete(f.sessions, ck.Value)
		f.mu.Unlock()
	}
	c.SetCookie(&http.Cookie{Name: "decap_session", Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return c.NoContent(http.StatusNoContent)
}

func (f *fakeAPI) refs(c echo.Context) error {
	sha := func(n int) string { return fakeSHA(fmt.Sprint("ref", n)) }
	type ref struct {
		Name string `json:"name"`
		SHA  string `json:"sha"`
	}
	return c.JSON(http.StatusOK, map[string][]ref{
		"branches": {{"main", sha(1)}, {"feature/login", sha(2)}, {"release/1.x", sha(3)}},
		"tags":     {{"v1.0.0", sha(4)}, {"v1.1.0", sha(5)}},
	})
}

func (f *fakeAPI) requestBuild(c echo.Context) error {
	key := build.ProjectKey(c.Param("team"), c.Param("project"))
	script, ok := fakeScripts[key]
	if !ok {
		return apiError(http.StatusNotFound, "project "+key+": not found")
	}
	var in struct {
		Ref     string        `json:"ref"`
		RefType build.RefType `json:"refType"`
	}
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil || build.ValidateRef(in.Ref) != nil {
		return apiError(http.StatusBadRequest, "body must be {\"ref\": ...} with a valid ref")
	}
	if in.RefType == "" {
		in.RefType = build.Branch
	}
	now := time.Now()
	rec := build.Record{BuildID: build.NewID(now), Team: c.Param("team"), Project: c.Param("project"), Ref: in.Ref,
		RefType: in.RefType, Trigger: build.TriggerAPI, RequestedBy: "ui", Status: build.StatusQueued, QueuedAt: now}
	if err := f.records.Save(c.Request().Context(), rec); err != nil {
		return err
	}
	run := &fakeRun{cancel: make(chan struct{})}
	f.mu.Lock()
	f.runs[rec.BuildID] = run
	f.mu.Unlock()
	go f.execute(rec, run, script.lines, script.every)
	return c.JSON(http.StatusAccepted, map[string]string{"id": string(rec.BuildID), "lockKey": rec.LockKey()})
}

// execute plays a build: queued a moment, running while it prints, then
// succeeded with artifacts, or cancelled.
func (f *fakeAPI) execute(rec build.Record, run *fakeRun, lines []string, every time.Duration) {
	ctx := context.Background()
	finish := func(s build.Status, code int, reason string) {
		rec.Status, rec.ExitCode, rec.Reason, rec.FinishedAt = s, &code, reason, time.Now()
		rec.LogKey = build.LogKey(rec.BuildID)
		if s == build.StatusSucceeded {
			rec.ArtifactsKey = build.ArtifactsKey(rec.BuildID)
		}
		f.records.Save(ctx, rec)
		f.locks.Release(ctx, rec.LockKey(), rec.BuildID)
	}
	select {
	case <-time.After(400 * time.Millisecond):
	case <-run.cancel:
		finish(build.StatusCancelled, -1, "cancelled while queued")
		return
	}
	rec.Status, rec.StartedAt = build.StatusRunning, time.Now()
	f.locks.Acquire(ctx, build.Lease{Key: rec.LockKey(), BuildID: rec.BuildID, Owner: "fake-dispatcher",
		AcquiredAt: rec.StartedAt, ExpiresAt: rec.StartedAt.Add(time.Hour)}, 0)
	f.records.Save(ctx, rec)
	for _, line := range lines {
		select {
		case <-time.After(every):
		case <-run.cancel:
			run.mu.Lock()
			run.log = append(run.log, "decap: build cancelled\n"...)
			run.mu.Unlock()
			finish(build.StatusCancelled, -1, "cancelled by a user")
			return
		}
		run.mu.Lock()
		run.log = append(run.log, line+"\n"...)
		run.mu.Unlock()
	}
	finish(build.StatusSucceeded, 0, "")
}

func (f *fakeAPI) record(c echo.Context) (build.Record, *fakeRun, error) {
	id, err := build.ParseID(c.Param("id"))
	if err != nil {
		return build.Record{}, nil, apiError(http.StatusBadRequest, err.Error())
	}
	rec, err := f.records.Get(c.Request().Context(), id)
	if err != nil {
		return build.Record{}, nil, apiError(http.StatusNotFound, err.Error())
	}
	f.mu.Lock()
	run := f.runs[id]
	f.mu.Unlock()
	return rec, run, nil
}

func (f *fakeAPI) getBuild(c echo.Context) error {
	rec, _, err := f.record(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rec)
}

// buildLog serves the log; with follow=1 it streams until the build is
// final, like ingest.
func (f *fakeAPI) buildLog(c echo.Context) error {
	rec, run, err := f.record(c)
	if err != nil {
		return err
	}
	if c.QueryParam("times") != "" {
		return apiError(http.StatusNotFound, "the fake keeps no line times")
	}
	if run == nil {
		return c.String(http.StatusOK, "(history: no log kept by the fake)\n")
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
	w.WriteHeader(http.StatusOK)
	follow := c.QueryParam("follow") == "1"
	off := 0
	for {
		rec, _ = f.records.Get(c.Request().Context(), rec.BuildID)
		chunk := run.logFrom(off)
		off += len(chunk)
		w.Write(chunk)
		w.Flush()
		if !follow || rec.Status.Final() {
			return nil
		}
		select {
		case <-c.Request().Context().Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (f *fakeAPI) artifacts(c echo.Context) error {
	rec, _, err := f.record(c)
	if err != nil {
		return err
	}
	if rec.ArtifactsKey == "" {
		return apiError(http.StatusNotFound, "no artifacts")
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	body := []byte("built " + string(rec.BuildID) + "\n")
	tw.WriteHeader(&tar.Header{Name: "result.txt", Mode: 0o644, Size: int64(len(body)), ModTime: rec.FinishedAt})
	tw.Write(body)
	tw.Close()
	zw.Close()
	return c.Blob(http.StatusOK, "application/gzip", buf.Bytes())
}

func (f *fakeAPI) cancel(c echo.Context) error {
	rec, run, err := f.record(c)
	if err != nil {
		return err
	}
	if rec.Status.Final() || run == nil {
		return apiError(http.StatusConflict, "build "+string(rec.BuildID)+" already ended "+strings.ToUpper(string(rec.Status)))
	}
	run.once.Do(func() { close(run.cancel) })
	return c.JSON(http.StatusAccepted, map[string]string{"id": string(rec.BuildID), "status": "cancelling"})
}

func (f *fakeAPI) pause(c echo.Context) error {
	var in struct {
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return apiError(http.StatusBadRequest, "body must be JSON like {\"reason\": ...}")
	}
	g := build.GateState{Paused: true, Reason: in.Reason, By: "ui", Since: time.Now()}
	f.gate.Set(c.Request().Context(), g)
	return c.JSON(http.StatusOK, g)
}

func (f *fakeAPI) resume(c echo.Context) error {
	f.gate.Set(c.Request().Context(), build.GateState{})
	return c.JSON(http.StatusOK, build.GateState{})
}
