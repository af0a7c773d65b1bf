package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ui"
)

// TestProjectPullRequests checks the project page's open pull requests:
// each with its head, trust and state — a waiting one says what approves
// it — and its latest build; closed ones are not listed, and the title,
// which anybody who opens a pull request writes, is escaped.
func TestProjectPullRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	records := buildtest.NewRecords()
	pulls := buildtest.NewPullRequests()
	cat := buildtest.NewCatalog("c0ffee", map[string]string{
		"decap-ci/hello": `{"buildImage":"x","pullRequests":{"baseRefRegex":"main"}}`,
	})
	req := build.Request{V: 1, BuildID: build.NewID(t0), Team: "decap-ci", Project: "hello", Ref: "pull/3", RefType: build.Pull,
		SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPullRequest, RequestedAt: t0,
		PullRequest: &build.PullRequest{Number: 3, BaseRef: "main", HeadRef: "fix", HeadRepo: "decap-ci/hello",
			HeadSHA: "0123456789abcdef0123456789abcdef01234567", Trusted: true}}
	if err := records.Save(ctx, build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
	building := buildtest.SamplePull("decap-ci", "hello", 3)
	building.Title, building.HeadRepo, building.HeadSHA = "Fix it", "decap-ci/hello", req.SHA
	building.Trusted, building.State, building.Reason, building.Build = true, build.PullBuilding, "", req.BuildID
	waiting := buildtest.SamplePull("decap-ci", "hello", 4)
	waiting.Title = hostile
	closed := buildtest.SamplePull("decap-ci", "hello", 5)
	closed.Title, closed.Closed, closed.State = "Closed one", true, build.PullClosed
	for _, p := range []build.PullRequestState{building, waiting, closed} {
		if err := pulls.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	e := echo.New()
	ui.New(ui.Config{}, ui.Deps{Records: records, Catalog: cat, Pulls: pulls, Now: func() time.Time { return t0 }}).Register(e)
	w := httptest.NewRecorder()
	e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ui/projects/decap-ci/hello", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	page := w.Body.String()
	for _, want := range []string{
		"Open pull requests", `id="pull-3"`, "#3 Fix it", "trusted", "/ui/builds/" + string(req.BuildID),
		`id="pull-4"`, hostileEscaped, "untrusted (fork)", "waiting for approval", "/ok-to-test", "ok-to-test</span> label",
		"into <span class=\"mono\">main</span>; untrusted ones (forks): approval",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, not := range []string{hostile, "Closed one", `id="pull-5"`} {
		if strings.Contains(page, not) {
			t.Errorf("page shows %q", not)
		}
	}
}

// TestBuildPagePullRequest checks that a pull request's build page names
// its pull request, and says an approved fork's build is untrusted.
func TestBuildPagePullRequest(t *testing.T) {
	t.Parallel()
	records := buildtest.NewRecords()
	req := build.Request{V: 1, BuildID: build.NewID(t0), Team: "decap-ci", Project: "hello", Ref: "pull/4", RefType: build.Pull,
		SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPullRequest, RequestedAt: t0,
		PullRequest: &build.PullRequest{Number: 4, BaseRef: "main", HeadRef: hostile, HeadRepo: "octocat/hello",
			HeadSHA: "0123456789abcdef0123456789abcdef01234567", ApprovedBy: "a-member"}}
	if err := records.Save(context.Background(), build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	ui.New(ui.Config{}, ui.Deps{Records: records, Now: func() time.Time { return t0 }}).Register(e)
	w := httptest.NewRecorder()
	e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ui/builds/"+string(req.BuildID), nil))
	page := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	for _, want := range []string{`href="/ui/projects/decap-ci/hello#pull-4">#4</a>`, "octocat/hello:" + hostileEscaped, "<strong>untrusted</strong>, approved by a-member: no secrets"} {
		if !strings.Contains(page, want) {
			t.Errorf("build page lacks %q", want)
		}
	}
	if strings.Contains(page, hostile) {
		t.Error("build page shows the head branch unescaped")
	}
}
