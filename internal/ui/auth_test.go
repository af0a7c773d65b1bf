package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/ui"
)

const apiToken = "ui-test-api-token-0f8e2d4c6b9a1735"

// sidecarPassword is a sidecar's env value no page may show.
const sidecarPassword = "sidecar-password-for-ui-tests"

// guarded is the UI mounted on ingest, behind ingest's sessions, as
// cmd/ingest mounts it.
type guarded struct {
	srv   *ingest.Server
	build build.ID
}

func newGuarded(t *testing.T, cfg ingest.Config) *guarded {
	t.Helper()
	clock := buildtest.NewClock(t0)
	records := buildtest.NewRecords()
	catalog := buildtest.NewCatalog("c0ffee", map[string]string{
		"decap-ci/hello": `{"buildImage":"debian:bookworm-slim","sidecars":[{"name":"db","image":"postgres:16",` +
			`"env":[{"name":"POSTGRES_PASSWORD","value":"` + sidecarPassword + `"}]}]}`,
	})
	id := build.NewID(t0)
	if err := records.Save(context.Background(), build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: t0}); err != nil {
		t.Fatal(err)
	}
	cfg.APIToken = apiToken
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://example.com" // httptest's Host
	}
	srv := ingest.New(cfg, ingest.Deps{Catalog: catalog, Records: records, Sessions: buildtest.NewSessions(clock.Now), Now: clock.Now})
	ui.New(ui.Config{AuthDisabled: cfg.AuthDisabled}, ui.Deps{Records: records, Catalog: catalog, Auth: srv, Now: clock.Now}).Register(srv.Echo())
	return &guarded{srv: srv, build: id}
}

func (g *guarded) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	g.srv.ServeHTTP(w, r)
	return w
}

// signIn returns the cookie of a new session.
func (g *guarded) signIn(t *testing.T) *http.Cookie {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/api/v1/session", strings.NewReader(`{"token":"`+apiToken+`"}`))
	r.Header.Set("Content-Type", "application/json")
	w := g.do(r)
	for _, c := range w.Result().Cookies() {
		if c.Name == "decap_session" && c.Value != "" {
			return c
		}
	}
	t.Fatalf("sign in: %d %s, no session cookie", w.Code, w.Body)
	return nil
}

func (g *guarded) pages() []string {
	return []string{"/", "/ui/teams", "/ui/teams/decap-ci", "/ui/projects/decap-ci/hello", "/ui/builds/" + string(g.build),
		"/ui/queue", "/ui/locks", "/ui/no-such-page"}
}

func TestPagesNeedASession(t *testing.T) {
	t.Parallel()
	g := newGuarded(t, ingest.Config{})
	for _, p := range g.pages() {
		w := g.do(httptest.NewRequest(http.MethodGet, p, nil))
		if w.Code != http.StatusFound || !strings.HasPrefix(w.Header().Get("Location"), "/ui/login?") {
			t.Errorf("GET %s without a session: %d to %q, want 302 to /ui/login?next=%s", p, w.Code, w.Header().Get("Location"), p)
			continue
		}
		if r := httptest.NewRequest(http.MethodGet, w.Header().Get("Location"), nil); r.URL.Query().Get("next") != p {
			t.Errorf("GET %s without a session: %d to %q, want 302 to /ui/login?next=%s", p, w.Code, w.Header().Get("Location"), p)
		}
		if strings.Contains(w.Body.String(), "hello") || strings.Contains(w.Body.String(), string(g.build)) {
			t.Errorf("GET %s without a session shows data: %s", p, w.Body)
		}
	}
	for _, p := range []string{"/ui/login?next=/ui/queue", "/ui/static/app.js", "/ui/static/app.css"} {
		if w := g.do(httptest.NewRequest(http.MethodGet, p, nil)); w.Code != 200 {
			t.Errorf("GET %s without a session: %d, want 200 (public)", p, w.Code)
		}
	}

	c := g.signIn(t)
	for _, p := range g.pages() {
		r := httptest.NewRequest(http.MethodGet, p, nil)
		r.AddCookie(c)
		w := g.do(r)
		want := 200
		if p == "/ui/no-such-page" {
			want = 404
		}
		if w.Code != want {
			t.Errorf("GET %s with a session: %d, want %d", p, w.Code, want)
			continue
		}
		body := checkHTML(t, w)
		if !strings.Contains(body, `data-action="logout"`) {
			t.Errorf("GET %s with a session offers no sign-out", p)
		}
	}

	// Signed out on the server, the same cookie is sent to sign in again.
	r := httptest.NewRequest(http.MethodDelete, "/api/v1/session", nil)
	r.AddCookie(c)
	if w := g.do(r); w.Code != 204 {
		t.Fatalf("sign out: %d %s", w.Code, w.Body)
	}
	r = httptest.NewRequest(http.MethodGet, "/ui/queue", nil)
	r.AddCookie(c)
	if w := g.do(r); w.Code != http.StatusFound {
		t.Errorf("GET /ui/queue with a signed-out session: %d, want 302", w.Code)
	}
}

func TestPagesWhereReadsArePublic(t *testing.T) {
	t.Parallel()
	g := newGuarded(t, ingest.Config{ReadPublic: true})
	for _, p := range g.pages() {
		w := g.do(httptest.NewRequest(http.MethodGet, p, nil))
		want := 200
		if p == "/ui/no-such-page" {
			want = 404
		}
		if w.Code != want {
			t.Errorf("GET %s: %d, want %d", p, w.Code, want)
			continue
		}
		if body := checkHTML(t, w); strings.Contains(body, `data-action="logout"`) || !strings.Contains(body, "data-login") {
			t.Errorf("GET %s without a session offers sign-out, or no sign-in", p)
		}
	}
	// A cookie that is no session is not taken for one.
	r := httptest.NewRequest(http.MethodGet, "/ui/queue", nil)
	r.AddCookie(&http.Cookie{Name: "decap_session", Value: "stale"})
	if body := checkHTML(t, g.do(r)); strings.Contains(body, `data-action="logout"`) {
		t.Errorf("a stale cookie is offered sign-out")
	}
	r = httptest.NewRequest(http.MethodGet, "/ui/queue", nil)
	r.AddCookie(g.signIn(t))
	if body := checkHTML(t, g.do(r)); !strings.Contains(body, `data-action="logout"`) {
		t.Errorf("a valid session is not offered sign-out")
	}
}

func TestProjectPageShowsSidecarEnvNamesOnly(t *testing.T) {
	t.Parallel()
	g := newGuarded(t, ingest.Config{ReadPublic: true})
	w := g.do(httptest.NewRequest(http.MethodGet, "/ui/projects/decap-ci/hello", nil))
	body := checkHTML(t, w)
	if strings.Contains(body, sidecarPassword) {
		t.Errorf("the project page shows a sidecar's env value")
	}
	for _, want := range []string{"postgres:16", "POSTGRES_PASSWORD"} {
		if !strings.Contains(body, want) {
			t.Errorf("the project page does not show %q", want)
		}
	}
}

// A session ends on the server: the page asks to sign in again.
func TestExpiredSessionSendsToSignIn(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(t0)
	sessions := buildtest.NewSessions(clock.Now)
	srv := ingest.New(ingest.Config{APIToken: apiToken, SessionTTL: time.Hour}, ingest.Deps{Sessions: sessions, Now: clock.Now})
	ui.New(ui.Config{}, ui.Deps{Auth: srv, Now: clock.Now}).Register(srv.Echo())
	g := &guarded{srv: srv}
	c := g.signIn(t)
	r := httptest.NewRequest(http.MethodGet, "/ui/locks", nil)
	r.AddCookie(c)
	if w := g.do(r); w.Code != 200 {
		t.Fatalf("GET /ui/locks with a session: %d", w.Code)
	}
	clock.Advance(time.Hour)
	r = httptest.NewRequest(http.MethodGet, "/ui/locks", nil)
	r.AddCookie(c)
	if w := g.do(r); w.Code != http.StatusFound {
		t.Errorf("GET /ui/locks with an expired session: %d, want 302 to sign in", w.Code)
	}
}
