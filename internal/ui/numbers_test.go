package ui_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ui"
)

// linkTo is how a page links a numbered build: its number beside its ID.
func linkTo(id build.ID, number string) string {
	return `href="/ui/builds/` + string(id) + `" title="` + string(id) + `"><span class="num">` + number + `</span> ` + string(id)[28:] + `</a>`
}

// TestNumbersBesideIDs checks that every page that lists builds shows each
// build's number beside its ID: the fixture's decap-ci/hello builds are
// #1 to #6 in the order it saved them, decap-ci/other's running build #1.
func TestNumbersBesideIDs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	tests := []struct {
		name, path string
		want       []string
	}{
		{"dashboard", "/", []string{
			linkTo(f.ids["running"], "#4"), linkTo(f.ids["running-other"], "#1"), // running
			linkTo(f.ids["deferred"], "#5"), // waiting
			linkTo(f.ids["ok2"], "#3"),      // recent
		}},
		{"project", "/ui/projects/decap-ci/hello", []string{
			linkTo(f.ids["ok0"], "#1"), linkTo(f.ids["ok1"], "#2"), linkTo(f.ids["ok2"], "#3"),
			linkTo(f.ids["running"], "#4"), linkTo(f.ids["deferred"], "#5"), linkTo(f.ids["hostile"], "#6"),
		}},
		{"queue", "/ui/queue", []string{linkTo(f.ids["deferred"], "#5"), `(#5 ` + string(f.ids["deferred"])[28:] + `) from the queue?`}},
		{"build", "/ui/builds/" + string(f.ids["ok1"]), []string{
			`<title>Build #2 of decap-ci/hello · Decap</title>`,
			`<h1>Build <span class="num">#2</span> <span class="mono"`,
			`<dt>number</dt><dd>#2</dd>`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := get(t, f.e, tt.path)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200", tt.path, rec.Code)
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

// unnumbered reads records as they were stored before builds had numbers.
type unnumbered struct{ ui.Records }

func (u unnumbered) Get(ctx context.Context, id build.ID) (build.Record, error) {
	r, err := u.Records.Get(ctx, id)
	r.Number = 0
	return r, err
}

func (u unnumbered) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	recs, next, err := u.Records.ListProject(ctx, team, project, limit, cursor)
	for i := range recs {
		recs[i].Number = 0
	}
	return recs, next, err
}

// TestBuildsWithoutNumbers checks that a build recorded before numbering
// shows its ID alone, and its page says it has no number.
func TestBuildsWithoutNumbers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	e := echo.New()
	ui.New(ui.Config{}, ui.Deps{Records: unnumbered{f.records}, Catalog: f.catalog, Now: f.clock.Now}).Register(e)
	id := f.ids["ok0"]
	body := checkHTML(t, get(t, e, "/ui/projects/decap-ci/hello"))
	if want := `title="` + string(id) + `">` + string(id)[28:] + `</a>`; !strings.Contains(body, want) {
		t.Errorf("project page lacks %q", want)
	}
	body = checkHTML(t, get(t, e, "/ui/builds/"+string(id)))
	for _, want := range []string{"none (recorded before builds had numbers)", `<title>Build ` + string(id)[28:] + ` of decap-ci/hello`} {
		if !strings.Contains(body, want) {
			t.Errorf("build page lacks %q", want)
		}
	}
	if strings.Contains(body, `class="num"`) {
		t.Errorf("build page shows a number for an unnumbered build")
	}
}

// TestRebuildButton checks that the build page offers Rebuild for an ended
// build only (the script shows it when the build ends), and that it posts
// to the build's rebuild endpoint.
func TestRebuildButton(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	for name, wantShown := range map[string]bool{"ok0": true, "hostile": true, "running": false, "deferred": false} {
		id := f.ids[name]
		body := checkHTML(t, get(t, f.e, "/ui/builds/"+string(id)))
		i := strings.Index(body, `id="rebuild"`)
		if i < 0 {
			t.Errorf("%s: the build page has no Rebuild button", name)
			continue
		}
		button := body[i : strings.Index(body[i:], "</button>")+i]
		if !strings.Contains(button, `data-action="rebuild" data-url="/api/v1/builds/`+string(id)+`/rebuild"`) {
			t.Errorf("%s: the Rebuild button %q does not post to the build's rebuild endpoint", name, button)
		}
		if shown := !strings.Contains(button, " hidden"); shown != wantShown {
			t.Errorf("%s (%s): Rebuild shown = %v, want %v: %s", name, id, shown, wantShown, button)
		}
	}
}

// TestAttemptChain checks the build page's links to related builds: the
// build a rebuild repeats, the attempt a retry repeats and the retry of a
// failed attempt, and the build that superseded a request, by number when
// the other record can be read and by short ID otherwise; a reason that
// only names a build links nothing.
func TestAttemptChain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	ctx := context.Background()
	at := t0.Add(-time.Minute)
	save := func(r build.Record) build.ID {
		t.Helper()
		r.BuildID, r.Team, r.Project, r.Ref, r.RefType, r.Trigger, r.QueuedAt = build.NewID(at), "decap-ci", "hello", "main", build.Branch, build.TriggerAPI, at
		if err := f.records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r.BuildID
	}
	rebuild := save(build.Record{Status: build.StatusQueued, RebuildOf: f.ids["ok1"]})
	lost := build.NewID(at) // a build whose record is gone
	orphan := save(build.Record{Status: build.StatusQueued, RebuildOf: lost})
	superseded := save(build.Record{Status: build.StatusSuperseded, Reason: "superseded by " + string(rebuild), SupersededBy: rebuild, FinishedAt: at})
	notAnID := save(build.Record{Status: build.StatusSuperseded, Reason: "superseded by " + hostile, FinishedAt: at})
	onlyInReason := save(build.Record{Status: build.StatusSuperseded, Reason: "superseded by " + string(rebuild), FinishedAt: at})
	// An attempt ended by an infrastructure failure, and its retry, whose
	// ID follows from it.
	failed := save(build.Record{Status: build.StatusErrored, Infra: build.InfraDeleted, Attempt: 1, FinishedAt: at})
	retry := build.RetryID(failed, at)
	if err := f.records.Save(ctx, build.Record{BuildID: retry, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerAPI, QueuedAt: at, Status: build.StatusQueued, RetryOf: failed, Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	numberOf := func(id build.ID) string {
		r, err := f.records.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return "#" + strconv.Itoa(r.Number)
	}
	failedWithoutRetry := save(build.Record{Status: build.StatusErrored, Infra: build.InfraDeleted, Attempt: 1, FinishedAt: at.Add(time.Second)})

	tests := []struct {
		name string
		id   build.ID
		want string // "": no chain
	}{
		{"rebuild", rebuild, `<li>rebuild of <a class="mono" href="/ui/builds/` + string(f.ids["ok1"]) + `" title="` + string(f.ids["ok1"]) + `">#2</a></li>`},
		{"rebuild of a build without record", orphan, `<li>rebuild of <a class="mono" href="/ui/builds/` + string(lost) + `" title="` + string(lost) + `">` + string(lost)[28:] + `</a></li>`},
		{"superseded", superseded, `<li>superseded by <a class="mono" href="/ui/builds/` + string(rebuild) + `" title="` + string(rebuild) + `">#7</a></li>`},
		{"superseded by no build", notAnID, ""},
		{"superseded, named only in the reason", onlyInReason, ""},
		{"a retry", retry, `<li>retry of <a class="mono" href="/ui/builds/` + string(failed) + `" title="` + string(failed) + `">` + numberOf(failed) + `</a> (this is attempt 2)</li>`},
		{"an attempt that was retried", failed, `<li>retried as <a class="mono" href="/ui/builds/` + string(retry) + `" title="` + string(retry) + `">` + numberOf(retry) + `</a> (attempt 2)</li>`},
		{"an attempt not retried (yet)", failedWithoutRetry, ""},
		{"a build of its own", f.ids["ok0"], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := checkHTML(t, get(t, f.e, "/ui/builds/"+string(tt.id)))
			if tt.want == "" {
				if strings.Contains(body, `class="chain"`) {
					t.Errorf("the page shows a chain:\n%s", body)
				}
				return
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("the page lacks %q:\n%s", tt.want, body)
			}
		})
	}
}
