package ui_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ui"
)

// TestSecretsOnPages: a project's page has the secrets form and the list
// its script fills from the API (names, sizes, times; the page holds no
// value), and says which secrets project.json wants; a build's page says
// which it received and why it got fewer.
func TestSecretsOnPages(t *testing.T) {
	t.Parallel()
	e := echo.New()
	records := buildtest.NewRecords()
	catalog := buildtest.NewCatalog("c0ffee", map[string]string{
		"decap-ci/secret": `{"buildImage":"debian:bookworm-slim","secrets":["NPM_TOKEN","DEPLOY_KEY"],"secretsRefRegex":"main|release/.*"}`,
	})
	rec := build.Record{BuildID: build.NewID(t0), Team: "decap-ci", Project: "secret", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusRunning, QueuedAt: t0, StartedAt: t0.Add(time.Second),
		Secrets: []string{"NPM_TOKEN"}, SecretsWithheld: "not set for decap-ci/secret: DEPLOY_KEY"}
	if err := records.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	ui.New(ui.Config{}, ui.Deps{Records: records, Catalog: catalog, Now: func() time.Time { return t0 }}).Register(e)

	page := get(t, e, "/ui/projects/decap-ci/secret").Body.String()
	for _, want := range []string{`id="secret-form"`, `data-secrets-url="/api/v1/projects/decap-ci/secret/secrets"`,
		`<dt>secrets wanted</dt>`, `<span class="mono">NPM_TOKEN</span>, <span class="mono">DEPLOY_KEY</span>`, `main|release/.*`} {
		if !strings.Contains(page, want) {
			t.Errorf("project page lacks %q", want)
		}
	}
	page = get(t, e, "/ui/builds/"+string(rec.BuildID)).Body.String()
	for _, want := range []string{`<dt>secrets</dt>`, `<span class="mono">NPM_TOKEN</span>`, `not all: not set for decap-ci/secret: DEPLOY_KEY`} {
		if !strings.Contains(page, want) {
			t.Errorf("build page lacks %q", want)
		}
	}
}
