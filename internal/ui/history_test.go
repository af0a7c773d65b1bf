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

// builds returns the build page links of a page, in order.
func builds(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<a class="mono" href="/ui/builds/([^"]+)"`).FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestProjectHistoryFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	id := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, string(f.ids[n]))
		}
		return out
	}
	tests := []struct {
		name, query string
		want        []string
	}{
		{"no filter", "", id("deferred", "running", "hostile", "ok2", "ok1", "ok0")},
		{"ref", "?ref=feature/progress", id("deferred", "running")},
		{"status", "?status=succeeded", id("ok2", "ok1", "ok0")},
		{"trigger", "?trigger=push", id("deferred", "ok2", "ok1", "ok0")},
		{"all three", "?ref=feature/progress&status=deferred&trigger=push", id("deferred")},
		{"empty values are no filter", "?ref=&status=&trigger=", id("deferred", "running", "hostile", "ok2", "ok1", "ok0")},
		{"nothing matches", "?ref=nope", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := get(t, f.e, "/ui/projects/decap-ci/hello"+tt.query)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d:\n%s", rec.Code, rec.Body)
			}
			body := checkHTML(t, rec)
			got := builds(body[strings.Index(body, `id="history-h"`):])
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("builds %v, want %v", got, tt.want)
			}
			if tt.want == nil && !strings.Contains(body, "No builds match.") {
				t.Errorf("an empty filtered page does not say that nothing matches")
			}
		})
	}
	t.Run("the form shows the filter", func(t *testing.T) {
		t.Parallel()
		body := checkHTML(t, get(t, f.e, "/ui/projects/decap-ci/hello?ref=feature/progress&status=running&trigger=manual"))
		for _, want := range []string{`name="ref" value="feature/progress"`, `<option value="running" selected>`,
			`<option value="manual" selected>`, `>clear</a>`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
	})
	t.Run("a hostile ref is data", func(t *testing.T) {
		t.Parallel()
		rec := get(t, f.e, "/ui/projects/decap-ci/hello?ref="+url(hostile))
		if body := checkHTML(t, rec); rec.Code != http.StatusOK || !strings.Contains(body, `value="`+hostileEscaped+`"`) {
			t.Errorf("status %d; the form does not show the ref escaped", rec.Code)
		}
	})
	for _, bad := range []string{"?status=great", "?trigger=cron", "?ref=a..b", "?ref=refs/heads/main"} {
		t.Run("bad "+bad, func(t *testing.T) {
			t.Parallel()
			rec := get(t, f.e, "/ui/projects/decap-ci/hello"+bad)
			checkHTML(t, rec)
			if rec.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400", rec.Code)
			}
		})
	}
}

// A filter reads the store page by page: a filtered page holds a page of
// matches, or says how far it looked, and its "older" link keeps the
// filter and goes on where it stopped.
func TestProjectHistoryFilterPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{PageSize: 2})
	ctx := context.Background()
	// 1200 builds of lab: every 300th on ref rare, the rest on main.
	var rare []string
	for i := range 1200 {
		q := t0.Add(-time.Duration(i+1) * time.Minute)
		ref := "main"
		if i%300 == 0 {
			ref = "rare"
		}
		r := build.Record{BuildID: build.NewID(q), Team: "ae6rt", Project: "lab", Ref: ref, RefType: build.Branch,
			Trigger: build.TriggerPush, Status: build.StatusSucceeded, QueuedAt: q, StartedAt: q, FinishedAt: q.Add(time.Second)}
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		if ref == "rare" {
			rare = append(rare, string(r.BuildID))
		}
	}
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
	path := "/ui/projects/ae6rt/lab?ref=rare"
	var got []string
	pages := 0
	for path != "" && pages < 10 {
		pages++
		body := checkHTML(t, get(t, f.e, path))
		page := builds(body[strings.Index(body, `id="history-h"`):])
		got = append(got, page...)
		m := next.FindStringSubmatch(body)
		if m == nil {
			break
		}
		if len(page) < 2 && !strings.Contains(body, `id="history-partial"`) {
			t.Errorf("page %d ends short of a page of matches without saying how far it looked", pages)
		}
		path = strings.ReplaceAll(m[1], "&amp;", "&")
		if !strings.Contains(path, "ref=rare") {
			t.Fatalf("older link %q loses the filter", path)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(rare) {
		t.Errorf("filtered pages list %v, want %v", got, rare)
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3 (500 builds looked at on each)", pages)
	}
}

// A project's own page does not name its project on every row; the
// dashboard does.
func TestNoProjectColumnOnItsOwnPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	body := checkHTML(t, get(t, f.e, "/ui/projects/decap-ci/hello"))
	history := body[strings.Index(body, `id="history-h"`):]
	if strings.Contains(history, "<th>Project</th>") || strings.Contains(history, `>decap-ci/hello</a></td>`) {
		t.Errorf("the project page's history has a project column")
	}
	body = checkHTML(t, get(t, f.e, "/"))
	recent := body[strings.Index(body, `id="recent-h"`):]
	if !strings.Contains(recent, "<th>Project</th>") {
		t.Errorf("the dashboard's recent builds lack the project column")
	}
}

func TestBreadcrumbsEndWithoutASlash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	for _, path := range []string{"/ui/teams/decap-ci", "/ui/projects/decap-ci/hello", "/ui/builds/" + string(f.ids["ok0"])} {
		body := checkHTML(t, get(t, f.e, path))
		m := regexp.MustCompile(`<p class="crumbs">(.*)</p>`).FindStringSubmatch(body)
		if m == nil {
			t.Errorf("%s has no breadcrumbs", path)
			continue
		}
		if strings.HasSuffix(strings.TrimSpace(m[1]), "/") {
			t.Errorf("%s: breadcrumbs %q end with a slash", path, m[1])
		}
	}
}

func TestTriggerSaysWhoAsked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	ctx := context.Background()
	cases := []struct {
		trigger build.Trigger
		by      string
		want    string
	}{
		{build.TriggerAPI, "api", "API request"},
		{build.TriggerManual, "ui", "by hand in the UI"},
		{build.TriggerPush, "octocat", "push by octocat"},
		{build.TriggerPullRequest, "", "pull request"},
	}
	for i, tc := range cases {
		q := t0.Add(-time.Duration(i+1) * time.Second)
		r := build.Record{BuildID: build.NewID(q), Team: "ae6rt", Project: "lab", Ref: "main", RefType: build.Branch,
			Trigger: tc.trigger, RequestedBy: tc.by, Status: build.StatusQueued, QueuedAt: q}
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		body := checkHTML(t, get(t, f.e, "/ui/builds/"+string(r.BuildID)))
		want := "<dt>trigger</dt><dd>" + tc.want + "</dd>"
		if !strings.Contains(body, want) {
			t.Errorf("%s by %q: page lacks %q:\n%s", tc.trigger, tc.by, want, excerpt(body, "<dt>trigger"))
		}
	}
}
