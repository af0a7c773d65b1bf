package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ui"
)

// nextPage returns the page's "next" link, "" when there is none.
func nextPage(body string) string {
	m := regexp.MustCompile(`<a href="([^"]+)" rel="next">next »</a>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

// walk follows a list's "next" links from path and returns every page's
// items as found by item.
func walk(t *testing.T, f *fixture, path string, item func(body string) []string) (items []string, pages int) {
	t.Helper()
	for path != "" && pages < 60 {
		pages++
		rec := get(t, f.e, path)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		body := checkHTML(t, rec)
		items = append(items, item(body)...)
		path = nextPage(body)
	}
	return items, pages
}

// saveMany saves n queued builds of ae6rt/lab, newest first in ids.
func saveMany(t *testing.T, f *fixture, n int, status build.Status) []string {
	t.Helper()
	var ids []string
	for i := range n {
		q := t0.Add(-time.Duration(i+1) * time.Second)
		r := build.Record{BuildID: build.NewID(q), Team: "ae6rt", Project: "lab", Ref: fmt.Sprintf("b%03d", i), RefType: build.Branch,
			Trigger: build.TriggerPush, Status: status, QueuedAt: q}
		if status.Final() {
			r.StartedAt, r.FinishedAt = q, q.Add(time.Second)
		}
		if err := f.records.Save(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(r.BuildID))
	}
	return ids
}

// All builds of every project page by page, newest first, none twice,
// none left out; the dashboard links there.
func TestAllBuildsPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{PageSize: 7})
	lab := saveMany(t, f, 30, build.StatusSucceeded)
	got, pages := walk(t, f, "/ui/builds", builds)
	// hello has 6 builds, other 1 (running), lab 30.
	if len(got) != 37 || pages != 6 {
		t.Errorf("%d builds on %d pages, want 37 on 6", len(got), pages)
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Errorf("build %s listed twice", id)
		}
		seen[id] = true
	}
	for _, id := range lab {
		if !seen[id] {
			t.Errorf("build %s of lab not listed", id)
		}
	}
	if body := checkHTML(t, get(t, f.e, "/")); !strings.Contains(body, `<a class="small" href="/ui/builds" id="all-builds">`) {
		t.Errorf("the dashboard does not link all builds")
	}
	for _, bad := range []string{"0", "11", "x"} {
		if rec := get(t, f.e, "/ui/builds?page="+bad); rec.Code != http.StatusBadRequest {
			t.Errorf("page=%s: %d, want 400", bad, rec.Code)
		}
	}
	// The last page says where older builds are, and has no next.
	g := newFixture(t, ui.Config{PageSize: 3})
	saveMany(t, g, 40, build.StatusSucceeded)
	body := checkHTML(t, get(t, g.e, "/ui/builds?page=10"))
	if nextPage(body) != "" || !strings.Contains(body, "Older builds are on their projects' pages.") {
		t.Errorf("page 10 of 47 builds, 3 a page: a next link, or no word of older builds")
	}
}

func TestQueueAndDashboardPageTheWaiting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{RecentBuilds: 5})
	saveMany(t, f, 120, build.StatusQueued)
	got, pages := walk(t, f, "/ui/queue", builds)
	if len(got) != 121 || pages != 3 {
		t.Errorf("queue lists %d requests on %d pages, want 121 on 3", len(got), pages)
	}
	body := checkHTML(t, get(t, f.e, "/"))
	waitingPart := body[strings.Index(body, `id="waiting-h"`):strings.Index(body, `id="recent-h"`)]
	if n := len(builds(waitingPart)); n != 5 {
		t.Errorf("the dashboard lists %d waiting requests, want 5", n)
	}
	if !strings.Contains(waitingPart, "116 more on the queue page") {
		t.Errorf("the dashboard does not say how many more wait")
	}
}

func TestLocksPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	ctx := context.Background()
	for i := range 60 {
		if err := f.locks.Acquire(ctx, build.Lease{Key: fmt.Sprintf("ae6rt/lab/b%03d", i), BuildID: build.NewID(t0.Add(time.Duration(i) * time.Second)),
			Owner: "d", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, pages := walk(t, f, "/ui/locks", func(body string) []string {
		return regexp.MustCompile(`data-action="unlock"`).FindAllString(body, -1)
	})
	if len(got) != 61 || pages != 2 {
		t.Errorf("%d locks on %d pages, want 61 on 2", len(got), pages)
	}
}

// The teams page lists every project with its newest build; a project
// without builds says so.
func TestTeamsPageShowsEachProjectsNewestBuild(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	body := checkHTML(t, get(t, f.e, "/ui/teams"))
	for _, tc := range []struct{ project, want string }{
		{"/ui/projects/decap-ci/hello", linkTo(f.ids["deferred"], "#5")},
		{"/ui/projects/decap-ci/other", linkTo(f.ids["running-other"], "#1")},
		{"/ui/projects/ae6rt/lab", "no builds yet"},
		{"/ui/projects/decap-ci/broken", "no builds yet"},
	} {
		row := rowOf(body, `href="`+tc.project+`"`)
		if !strings.Contains(row, tc.want) {
			t.Errorf("row of %s lacks %q:\n%s", tc.project, tc.want, row)
		}
	}
	if row := rowOf(body, `href="/ui/projects/decap-ci/other"`); !strings.Contains(row, `<span class="status st-run" data-field="status">running</span>`) {
		t.Errorf("row of other lacks its newest build's status:\n%s", row)
	}
	body = checkHTML(t, get(t, f.e, "/ui/teams/decap-ci"))
	if row := rowOf(body, `href="/ui/projects/decap-ci/hello"`); !strings.Contains(row, "deferred") {
		t.Errorf("team page: hello's row lacks its newest build:\n%s", row)
	}
}

func TestTeamsPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	for i := range 70 {
		f.catalog.Set(fmt.Sprintf("zz/p%02d", i), `{"buildImage":"debian:bookworm-slim"}`)
	}
	got, pages := walk(t, f, "/ui/teams", func(body string) []string {
		return regexp.MustCompile(`<td><a href="/ui/projects/[^"]+">`).FindAllString(body, -1)
	})
	if len(got) != 74 || pages != 2 {
		t.Errorf("%d projects on %d pages, want 74 on 2", len(got), pages)
	}
}
