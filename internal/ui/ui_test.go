package ui_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ui"
)

// hostile is data no page may let through unescaped.
const (
	hostile        = `<script>alert(1)</script>`
	hostileEscaped = `&lt;script&gt;alert(1)&lt;/script&gt;`
	hostileAttr    = `"><img src=x onerror=alert(2)>`
)

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

type fixture struct {
	e       *echo.Echo
	clock   *buildtest.Clock
	records *buildtest.FakeRecords
	catalog *buildtest.Catalog
	locks   *buildtest.FakeLocks
	gate    *buildtest.FakeGate
	queue   *buildtest.FakeQueue
	ids     map[string]build.ID
}

func newFixture(t *testing.T, cfg ui.Config) *fixture {
	t.Helper()
	clock := buildtest.NewClock(t0)
	f := &fixture{
		e:       echo.New(),
		clock:   clock,
		records: buildtest.NewRecords(),
		catalog: buildtest.NewCatalog("c0ffee", map[string]string{
			"decap-ci/hello":  `{"buildImage":"debian:bookworm-slim","repoUrl":"https://github.com/decap-ci/hello","repoDescription":"Hello, world"}`,
			"decap-ci/other":  `{"buildImage":"debian:bookworm-slim"}`,
			"decap-ci/broken": `{"buildImage":"` + hostile + `"}`,
			"ae6rt/lab":       `{"buildImage":"debian:bookworm-slim"}`,
		}),
		locks: buildtest.NewLocks(clock.Now),
		gate:  buildtest.NewGate(),
		queue: buildtest.NewQueue(clock.Now, buildtest.QueueOptions{}),
		ids:   map[string]build.ID{},
	}
	ctx := context.Background()
	save := func(name string, r build.Record) {
		t.Helper()
		r.BuildID = build.NewID(r.QueuedAt)
		f.ids[name] = r.BuildID
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	exit0, exit1 := 0, 1
	// Three successes of 60s make hello's average a minute.
	for i := range 3 {
		q := t0.Add(-time.Duration(10-i) * time.Hour)
		save(fmt.Sprintf("ok%d", i), build.Record{Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
			SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", Trigger: build.TriggerPush, Status: build.StatusSucceeded,
			ExitCode: &exit0, QueuedAt: q, StartedAt: q.Add(time.Second), FinishedAt: q.Add(61 * time.Second),
			LogKey: "logs/x/console.log.gz", ArtifactsKey: "artifacts/x/artifacts.tar.gz"})
	}
	save("running", build.Record{Team: "decap-ci", Project: "hello", Ref: "feature/progress", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusRunning, QueuedAt: t0.Add(-40 * time.Second), StartedAt: t0.Add(-30 * time.Second)})
	save("running-other", build.Record{Team: "decap-ci", Project: "other", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerAPI, Status: build.StatusRunning, QueuedAt: t0.Add(-20 * time.Second), StartedAt: t0.Add(-10 * time.Second)})
	save("deferred", build.Record{Team: "decap-ci", Project: "hello", Ref: "feature/progress", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusDeferred, QueuedAt: t0.Add(-5 * time.Second),
		Reason: "lock key busy " + hostileAttr, NextAttemptAt: t0.Add(25 * time.Second)})
	// Records are data: whatever validation let in before, the UI escapes.
	save("hostile", build.Record{Team: "decap-ci", Project: "hello", Ref: hostile, RefType: build.Tag,
		SHA: hostileAttr, Trigger: build.TriggerAPI, RequestedBy: hostile, Status: build.StatusFailed, ExitCode: &exit1,
		QueuedAt: t0.Add(-time.Hour), StartedAt: t0.Add(-time.Hour + time.Second), FinishedAt: t0.Add(-time.Hour + 5*time.Second),
		Reason: hostile, LogKey: "logs/y/console.log.gz"})

	if err := f.locks.Acquire(ctx, build.Lease{Key: "decap-ci/hello/" + hostile, BuildID: f.ids["hostile"],
		Owner: "dispatcher-" + hostileAttr, AcquiredAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.gate.Set(ctx, build.GateState{Paused: true, Reason: hostile, By: "ops", Since: t0.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := f.queue.Publish(ctx, build.Request{V: 1, BuildID: f.ids["deferred"], Team: "decap-ci", Project: "hello",
		Ref: "feature/progress", RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: t0}); err != nil {
		t.Fatal(err)
	}
	ui.New(cfg, ui.Deps{Records: f.records, Catalog: f.catalog, Queue: f.queue, Locks: f.locks, Gate: f.gate, Now: clock.Now}).Register(f.e)
	return f
}

// get serves one GET through the echo router.
func get(t *testing.T, e *echo.Echo, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

// ownScripts are the only script elements a page may have.
var ownScripts = regexp.MustCompile(`<script src="/ui/static/(log|app)\.js\?v=[0-9a-f]+" defer></script>`)

// checkHTML checks the headers every page carries and that hostile data
// appears, if at all, only escaped.
func checkHTML(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q, want text/html", ct)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q, want script-src 'self'", csp)
	}
	body := rec.Body.String()
	for _, raw := range []string{hostile, hostileAttr, "<img"} {
		if strings.Contains(body, raw) {
			t.Errorf("page contains %q unescaped:\n%s", raw, excerpt(body, raw))
		}
	}
	if n, own := strings.Count(body, "<script"), len(ownScripts.FindAllString(body, -1)); n != 2 || own != 2 {
		t.Errorf("page has %d <script elements (%d of log.js and app.js), want only log.js and app.js", n, own)
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "//cdn") {
		t.Errorf("page refers to an external URL:\n%s", body)
	}
	return body
}

func excerpt(body, s string) string {
	i := strings.Index(body, s)
	return body[max(0, i-200):min(len(body), i+200)]
}

func TestPagesRender(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	tests := []struct {
		name, path string
		want       []string
	}{
		{"dashboard", "/", []string{
			"Running", "decap-ci/hello", "feature/progress",
			`value="50"`, "50% of ~1m00s", // 30s of a 60s average
			"no estimate",             // decap-ci/other has no successful build
			"lock key busy &#34;&gt;", // the deferred request's reason, escaped
			"when dispatch resumes",   // its next attempt, the gate being paused
			hostileEscaped,            // a recent build's ref and the gate's reason
			`data-action="resume"`, "paused",
			`data-stat="visible">1<`,
		}},
		{"teams", "/ui/teams", []string{`href="/ui/teams/decap-ci"`, `href="/ui/teams/ae6rt"`}},
		{"team", "/ui/teams/decap-ci", []string{
			`href="/ui/projects/decap-ci/hello"`, "Hello, world",
			`class="invalid"`, "buildImage &#34;&lt;script&gt;", // the invalid descriptor, shown with its error
		}},
		{"project", "/ui/projects/decap-ci/hello", []string{
			`data-refs-url="/api/v1/projects/decap-ci/hello/refs"`,
			`data-builds-url="/api/v1/projects/decap-ci/hello/builds"`,
			"https://github.com/decap-ci/hello", "6113728", hostileEscaped, "1m00s",
		}},
		{"invalid project", "/ui/projects/decap-ci/broken", []string{"Not buildable", "&lt;script&gt;"}},
		{"running build", "/ui/builds/" + string(f.ids["running"]), []string{
			`data-status="running"`, `data-log-url="/api/v1/builds/` + string(f.ids["running"]) + `/log"`,
			`id="cancel"`, `value="50"`, `id="artifacts"`,
		}},
		{"succeeded build", "/ui/builds/" + string(f.ids["ok0"]), []string{
			`href="/api/v1/builds/` + string(f.ids["ok0"]) + `/artifacts"`, "1m00s", "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
		}},
		{"hostile build", "/ui/builds/" + string(f.ids["hostile"]), []string{hostileEscaped, "&#34;&gt;&lt;img"}},
		{"queue", "/ui/queue", []string{"deferred", "decap-ci/hello/feature/progress", `data-action="cancel"`, `data-confirm="Remove`}},
		{"locks", "/ui/locks", []string{
			"decap-ci/hello/" + hostileEscaped,
			// the force-release URL escapes the ref segment
			`data-url="/api/v1/locks/decap-ci/hello/%3Cscript%3Ealert%281%29%3C/script%3E"`,
			`data-action="unlock"`,
		}},
		{"login", "/ui/login?next=/ui/queue", []string{`id="login"`, `data-next="/ui/queue"`, `type="password"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := get(t, f.e, tt.path)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200:\n%s", tt.path, rec.Code, rec.Body)
			}
			body := checkHTML(t, rec)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s: page lacks %q:\n%s", tt.path, w, body)
				}
			}
		})
	}
}

func TestErrorPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	tests := []struct {
		name, path string
		want       int
		text       string
	}{
		{"unknown build", "/ui/builds/" + string(build.NewID(t0)), http.StatusNotFound, "Not found"},
		{"malformed build id", "/ui/builds/" + url(hostile), http.StatusBadRequest, "not a UUID"},
		{"unknown team", "/ui/teams/nobody", http.StatusNotFound, "Not found"},
		{"unknown project", "/ui/projects/decap-ci/nothing", http.StatusNotFound, "Not found"},
		{"bad project name", "/ui/projects/decap-ci/..", http.StatusBadRequest, "Bad request"},
		{"no such page", "/ui/nothing/here", http.StatusNotFound, "Not found"},
		{"no such static file", "/ui/static/nothing.js", http.StatusNotFound, "Not found"},
		{"malformed cursor", "/ui/projects/decap-ci/hello?cursor=%21%21", http.StatusBadRequest, "cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := get(t, f.e, tt.path)
			if rec.Code != tt.want {
				t.Fatalf("GET %s = %d, want %d:\n%s", tt.path, rec.Code, tt.want, rec.Body)
			}
			body := checkHTML(t, rec)
			if !strings.Contains(body, tt.text) {
				t.Errorf("GET %s: page lacks %q:\n%s", tt.path, tt.text, body)
			}
		})
	}
}

func url(s string) string {
	return strings.NewReplacer("<", "%3C", ">", "%3E", "(", "%28", ")", "%29", "/", "%2F").Replace(s)
}

func TestMissingBackendsSayNotAvailable(t *testing.T) {
	t.Parallel()
	e := echo.New()
	ui.New(ui.Config{}, ui.Deps{}).Register(e)
	for _, path := range []string{"/", "/ui/teams", "/ui/queue", "/ui/locks"} {
		rec := get(t, e, path)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200:\n%s", path, rec.Code, rec.Body)
		}
		if body := checkHTML(t, rec); !strings.Contains(body, "not available") {
			t.Errorf("GET %s: page does not say %q:\n%s", path, "not available", body)
		}
	}
	rec := get(t, e, "/ui/builds/"+string(build.NewID(t0)))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("build page without records = %d, want 503", rec.Code)
	}
}

// failingRecords answers every read with ErrUnavailable.
type failingRecords struct{}

var errDown = fmt.Errorf("%w: database is down", build.ErrUnavailable)

func (failingRecords) Get(context.Context, build.ID) (build.Record, error) {
	return build.Record{}, errDown
}
func (failingRecords) ListProject(context.Context, string, string, int, string) ([]build.Record, string, error) {
	return nil, "", errDown
}
func (failingRecords) AverageDuration(context.Context, string, string, int) (time.Duration, int, error) {
	return 0, 0, errDown
}
func (failingRecords) Running(context.Context) ([]build.Record, error) { return nil, errDown }
func (failingRecords) Waiting(context.Context, int, int) ([]build.Record, int, error) {
	return nil, 0, errDown
}

func TestFailingBackendLeavesTheRestOfThePage(t *testing.T) {
	t.Parallel()
	e := echo.New()
	cat := buildtest.NewCatalog("c", map[string]string{"decap-ci/hello": `{"buildImage":"debian"}`})
	ui.New(ui.Config{}, ui.Deps{Records: failingRecords{}, Catalog: cat, Gate: buildtest.NewGate()}).Register(e)

	rec := get(t, e, "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("dashboard = %d, want 200 with failed panels:\n%s", rec.Code, rec.Body)
	}
	body := checkHTML(t, rec)
	for _, want := range []string{"running builds unavailable: backend unavailable: database is down", `data-action="pause"`} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %q:\n%s", want, body)
		}
	}
	if rec := get(t, e, "/ui/projects/decap-ci/hello"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "build history unavailable") {
		t.Errorf("project page = %d, want 200 saying the history is unavailable:\n%s", rec.Code, rec.Body)
	}
	if rec := get(t, e, "/ui/builds/"+string(build.NewID(t0))); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("build page = %d, want 503", rec.Code)
	}
}

func TestProjectHistoryPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{PageSize: 3})
	first := get(t, f.e, "/ui/projects/decap-ci/hello")
	body := checkHTML(t, first)
	m := regexp.MustCompile(`href="(/ui/projects/decap-ci/hello\?cursor=[^"]+)" rel="next"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("first page has no link to older builds:\n%s", body)
	}
	if got := strings.Count(body, `href="/ui/builds/`); got != 3 {
		t.Errorf("first page lists %d builds, want 3", got)
	}
	second := get(t, f.e, strings.ReplaceAll(m[1], "&amp;", "&"))
	if second.Code != http.StatusOK {
		t.Fatalf("second page = %d:\n%s", second.Code, second.Body)
	}
	body = checkHTML(t, second)
	// hello has 6 records: 3 successes, running, deferred, hostile.
	if got := strings.Count(body, `href="/ui/builds/`); got != 3 {
		t.Errorf("second page lists %d builds, want 3:\n%s", got, body)
	}
	if strings.Contains(body, `rel="next"`) || !strings.Contains(body, "« newest") {
		t.Errorf("second page should be the last and link to the newest:\n%s", body)
	}
}

func TestLoginNextStaysOnSite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	for next, want := range map[string]string{
		"/ui/builds/x":         "/ui/builds/x",
		"//evil.example/":      "/",
		"https://evil.example": "/",
		"/\\evil.example":      "/",
		"":                     "/",
	} {
		rec := get(t, f.e, "/ui/login?next="+strings.ReplaceAll(strings.ReplaceAll(next, "/", "%2F"), "\\", "%5C"))
		if body := rec.Body.String(); !strings.Contains(body, `data-next="`+want+`"`) {
			t.Errorf("next=%q: page lacks data-next=%q:\n%s", next, want, excerpt(body, "data-next"))
		}
	}
}

func TestSessionCookieOffersSignOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	if body := get(t, f.e, "/").Body.String(); !strings.Contains(body, `href="/ui/login"`) {
		t.Errorf("without a session the page should offer sign-in")
	}
	if body := get(t, f.e, "/", "Cookie", "decap_session=abc").Body.String(); !strings.Contains(body, `data-action="logout"`) {
		t.Errorf("with a session the page should offer sign-out")
	}
}

func TestStaticFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	page := get(t, f.e, "/").Body.String()
	m := regexp.MustCompile(`src="(/ui/static/app\.js\?v=([0-9a-f]+))"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("page does not load app.js by a versioned URL:\n%s", page)
	}
	for path, ctype := range map[string]string{m[1]: "javascript", "/ui/static/app.css": "text/css", "/ui/static/favicon.svg": "image/svg+xml"} {
		rec := get(t, f.e, path)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s = %d %q, want 200 %s", path, rec.Code, rec.Header().Get("Content-Type"), ctype)
		}
	}
	if cc := get(t, f.e, m[1]).Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("versioned asset Cache-Control = %q, want immutable", cc)
	}
	if rec := get(t, f.e, "/ui/static/app.js", "If-None-Match", `"`+m[2]+`"`); rec.Code != http.StatusNotModified {
		t.Errorf("conditional GET = %d, want 304", rec.Code)
	}
	js, _ := io.ReadAll(get(t, f.e, "/ui/static/app.js").Body)
	for _, forbidden := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "http://", "https://"} {
		if strings.Contains(string(js), forbidden) {
			t.Errorf("app.js uses %q", forbidden)
		}
	}
	for _, want := range []string{"'X-Decap-CSRF': '1'", "credentials: 'same-origin'", "/ui/login?next=", "follow=1"} {
		if !strings.Contains(string(js), want) {
			t.Errorf("app.js lacks %q", want)
		}
	}
}

func TestRegisterLeavesOtherRoutesAlone(t *testing.T) {
	t.Parallel()
	e := echo.New()
	e.GET("/api/v1/teams", func(c echo.Context) error { return c.String(200, "api") })
	ui.New(ui.Config{}, ui.Deps{}).Register(e)
	if rec := get(t, e, "/api/v1/teams"); rec.Body.String() != "api" {
		t.Errorf("API route shadowed: %d %q", rec.Code, rec.Body)
	}
	if rec := get(t, e, "/ui"); rec.Code != http.StatusFound || rec.Header().Get("Location") != "/" {
		t.Errorf("GET /ui = %d to %q, want a redirect to /", rec.Code, rec.Header().Get("Location"))
	}
}

// TestBrowserNotFoundPage checks that a browser asking for a path that is
// no route at all (a mistyped URL such as /nope) gets the UI's HTML 404
// page, as under /ui/, where it got the API's JSON; API clients, the API's
// and the hooks' paths and other methods keep the error handler's answer.
func TestBrowserNotFoundPage(t *testing.T) {
	t.Parallel()
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) { _ = c.JSON(http.StatusNotFound, map[string]string{"error": "json"}) }
	ui.New(ui.Config{}, ui.Deps{}).Register(e)
	const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	rec := get(t, e, "/nope", "Accept", browser)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("GET /nope from a browser = %d, want 404", rec.Code)
	}
	if body := checkHTML(t, rec); !strings.Contains(body, "Not found") || !strings.Contains(body, "/nope") {
		t.Errorf("GET /nope from a browser: page lacks \"Not found\" and the path:\n%s", body)
	}
	for _, tt := range []struct{ name, method, path, accept string }{
		{"curl", http.MethodGet, "/nope", "*/*"},
		{"API path from a browser", http.MethodGet, "/api/v1/nope", browser},
		{"hooks path from a browser", http.MethodGet, "/hooks/nope", browser},
		{"a POST from a browser", http.MethodPost, "/nope", browser},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.Header.Set("Accept", tt.accept)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Body.String() != "{\"error\":\"json\"}\n" {
			t.Errorf("%s: %s %s = %d %q, want the error handler's JSON", tt.name, tt.method, tt.path, rec.Code, rec.Body)
		}
	}
}

// TestTeamsPageListsSkippedEntries checks that the catalog's entries
// skipped for their names (a team or project directory Decap cannot use)
// are on the teams page, escaped: they were only in a log line.
func TestTeamsPageListsSkippedEntries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	f.catalog.SetSkipped([]string{`"acme/my project": invalid project name ` + hostile})
	body := checkHTML(t, get(t, f.e, "/ui/teams"))
	for _, want := range []string{"Skipped", "acme/my project", "invalid project name"} {
		if !strings.Contains(body, want) {
			t.Errorf("teams page lacks %q:\n%s", want, body)
		}
	}
}

// TestWaitingWhilePaused checks what the dashboard and the queue page say
// of waiting requests while dispatch is paused (the fixture's gate is):
// each waits because of the pause, a queued one too (it showed no reason),
// and is tried when dispatch resumes, not at a next attempt long past
// (shown as "now"). The queue's counts say what they count: a deferred
// request is a message in flight, which was labelled "in flight" next to
// "waiting 0" above a list of one waiting request.
func TestWaitingWhilePaused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	ctx := context.Background()
	overdue := build.Record{BuildID: build.NewID(t0.Add(-time.Hour)), Team: "decap-ci", Project: "other", Ref: "overdue", RefType: build.Branch,
		Trigger: build.TriggerAPI, Status: build.StatusDeferred, QueuedAt: t0.Add(-time.Hour), Reason: "concurrency cap reached (4)",
		NextAttemptAt: t0.Add(-10 * time.Minute)}
	queued := build.Record{BuildID: build.NewID(t0.Add(-time.Minute)), Team: "decap-ci", Project: "other", Ref: "plain", RefType: build.Branch,
		Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: t0.Add(-time.Minute)}
	for _, r := range []build.Record{overdue, queued} {
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/", "/ui/queue"} {
		body := checkHTML(t, get(t, f.e, path))
		for _, id := range []build.ID{overdue.BuildID, queued.BuildID} {
			row := rowOf(body, string(id))
			if !strings.Contains(row, "dispatch is paused") || !strings.Contains(row, "when dispatch resumes") {
				t.Errorf("%s: the row of %s does not say it waits for dispatch to resume:\n%s", path, id, row)
			}
		}
		if row := rowOf(body, string(overdue.BuildID)); !strings.Contains(row, "concurrency cap reached (4)") {
			t.Errorf("%s: the overdue row lost its own reason:\n%s", path, row)
		}
		for _, want := range []string{"ready to dispatch", "deferred or being dispatched"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the queue's counts are not labelled %q", path, want)
			}
		}
	}

	// Dispatch resumed: the record's own reason and next attempt.
	if err := f.gate.Set(ctx, build.GateState{}); err != nil {
		t.Fatal(err)
	}
	body := checkHTML(t, get(t, f.e, "/ui/queue"))
	if row := rowOf(body, string(f.ids["deferred"])); !strings.Contains(row, "in 25s") || strings.Contains(row, "paused") {
		t.Errorf("open gate: the deferred row does not show its next attempt alone:\n%s", row)
	}
}

// rowOf returns the table row of body in which s first appears.
func rowOf(body, s string) string {
	i := strings.Index(body, s)
	if i < 0 {
		return ""
	}
	start := strings.LastIndex(body[:i], "<tr")
	end := strings.Index(body[i:], "</tr>")
	if start < 0 || end < 0 {
		return excerpt(body, s)
	}
	return body[start : i+end]
}
