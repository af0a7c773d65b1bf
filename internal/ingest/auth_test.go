package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

// readEndpoints are every GET of the JSON API, with what they answer to a
// reader allowed in on the seeded fixture (seedBlobs adds id1's objects).
var readEndpoints = []struct {
	name, path string
	ok         int
}{
	{"teams", "/api/v1/teams", 200},
	{"projects", "/api/v1/projects", 200},
	{"project builds", "/api/v1/projects/decap-ci/hello/builds", 200},
	{"refs", "/api/v1/projects/decap-ci/hello/refs", 200},
	{"build", "/api/v1/builds/" + string(id1), 200},
	{"log", "/api/v1/builds/" + string(id1) + "/log", 200},
	{"followed log", "/api/v1/builds/" + string(id1) + "/log?follow=1", 200},
	{"artifacts", "/api/v1/builds/" + string(id1) + "/artifacts", 200},
	{"queue", "/api/v1/queue", 200},
	{"locks", "/api/v1/locks", 200},
	{"one lock", "/api/v1/locks/decap-ci/hello/main", 200},
	{"dispatch gate", "/api/v1/dispatch", 200},
}

// seedBlobs stores id1's log and artifacts.
func (f *fixture) seedBlobs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := f.blobs.Put(ctx, build.LogKey(id1), bytes.NewReader(gz(t, "<script>alert(1)</script>\n"))); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Put(ctx, build.ArtifactsKey(id1), strings.NewReader("tarball")); err != nil {
		t.Fatal(err)
	}
}

// signIn creates a session with the API token and returns its cookie.
func (f *fixture) signIn(t *testing.T) *http.Cookie {
	t.Helper()
	w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`))
	if w.Code != http.StatusNoContent {
		t.Fatalf("sign in: status %d (%s), want 204", w.Code, w.Body)
	}
	c := findCookie(w, "decap_session")
	if c == nil || c.Value == "" {
		t.Fatalf("sign in set no session cookie: %q", w.Header().Values("Set-Cookie"))
	}
	return c
}

func findCookie(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// anon is a read without any credential.
func anon(path string) *http.Request { return httptest.NewRequest(http.MethodGet, path, nil) }

// withSession is a read with the session cookie value.
func withSession(path, value string) *http.Request {
	r := anon(path)
	r.AddCookie(&http.Cookie{Name: "decap_session", Value: value})
	return r
}

func TestReadsNeedACredential(t *testing.T) {
	t.Parallel()
	modes := []struct {
		name   string
		cfg    func(*ingest.Config)
		req    func(f *fixture, t *testing.T, path string) *http.Request
		denied bool
	}{
		{"no credential", nil, func(_ *fixture, _ *testing.T, p string) *http.Request { return anon(p) }, true},
		{"wrong token", nil, func(_ *fixture, _ *testing.T, p string) *http.Request {
			return apiRequest(http.MethodGet, p, "guess", "")
		}, true},
		{"the API token as a session cookie", nil, func(_ *fixture, _ *testing.T, p string) *http.Request { return withSession(p, token) }, true},
		{"token", nil, func(_ *fixture, _ *testing.T, p string) *http.Request { return get(p) }, false},
		{"session", nil, func(f *fixture, t *testing.T, p string) *http.Request { return withSession(p, f.signIn(t).Value) }, false},
		{"reads public", func(c *ingest.Config) { c.ReadPublic = true }, func(_ *fixture, _ *testing.T, p string) *http.Request { return anon(p) }, false},
		{"auth off", func(c *ingest.Config) { c.AuthDisabled = true }, func(_ *fixture, _ *testing.T, p string) *http.Request { return anon(p) }, false},
	}
	for _, ep := range readEndpoints {
		for _, m := range modes {
			t.Run(ep.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, m.cfg)
				f.seed(t)
				f.seedBlobs(t)
				w := f.do(m.req(f, t, ep.path))
				if !m.denied {
					if w.Code != ep.ok {
						t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, ep.ok)
					}
					return
				}
				if w.Code != http.StatusUnauthorized {
					t.Fatalf("status = %d (%s), want 401", w.Code, w.Body)
				}
				if got, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(got, "API token") {
					t.Errorf("error = %q, want it to name the API token", got)
				}
				for _, leak := range []string{"hello", "Codertocat", "tarball", "script", string(id1)} {
					if strings.Contains(w.Body.String(), leak) {
						t.Errorf("a refused read shows %q: %s", leak, w.Body)
					}
				}
			})
		}
	}
	t.Run("health and readiness stay public", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		for _, p := range []string{"/healthz", "/readyz"} {
			if w := f.do(anon(p)); w.Code != 200 {
				t.Errorf("%s: status %d, want 200", p, w.Code)
			}
		}
	})
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	const build1 = "/api/v1/builds/" + string(id1)

	t.Run("sign in makes a random session, not a copy of the token", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		c := f.signIn(t)
		if c.Value == token || strings.Contains(c.Value, token) || len(c.Value) < 43 {
			t.Errorf("cookie value %q: want 256 random bits, not the token", c.Value)
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != int((12*time.Hour).Seconds()) {
			t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, Max-Age of 12h", c)
		}
		keys := f.sessions.Keys()
		if len(keys) != 1 || keys[0] != build.SessionKey(c.Value) || keys[0] == c.Value {
			t.Errorf("stored session keys %q, want only the SHA-256 of the cookie", keys)
		}
		other := f.signIn(t)
		if other.Value == c.Value {
			t.Errorf("two sign-ins got the same session ID %q", c.Value)
		}
		if w := f.do(withSession(build1, c.Value)); w.Code != 200 {
			t.Errorf("read with the session: %d %s", w.Code, w.Body)
		}
		r := withCookie(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "", ""), c.Value, "1")
		if w := f.do(r); w.Code != 200 || decodeJSON(t, w)["by"] != "ui" {
			t.Errorf("pause with the session: %d %s, want 200 by ui", w.Code, w.Body)
		}
		if strings.Contains(f.logs.String(), token) || strings.Contains(f.logs.String(), c.Value) {
			t.Errorf("the log shows the token or a session ID:\n%s", f.logs)
		}
	})

	t.Run("an expired session is refused and its cookie cleared", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.SessionTTL = time.Hour })
		f.seed(t)
		c := f.signIn(t)
		if c.MaxAge != 3600 {
			t.Errorf("cookie Max-Age = %d, want 3600 (the session's TTL)", c.MaxAge)
		}
		f.clock.Advance(time.Hour - time.Second)
		if w := f.do(withSession(build1, c.Value)); w.Code != 200 {
			t.Fatalf("read just before expiry: %d %s", w.Code, w.Body)
		}
		f.clock.Advance(time.Second)
		w := f.do(withSession(build1, c.Value))
		if w.Code != 401 || !strings.Contains(decodeJSON(t, w)["error"].(string), "sign in again") {
			t.Errorf("read with an expired session: %d %s, want 401 asking to sign in again", w.Code, w.Body)
		}
		if cleared := findCookie(w, "decap_session"); cleared == nil || cleared.MaxAge >= 0 {
			t.Errorf("cookie after a refused session: %+v, want it deleted", cleared)
		}
	})

	t.Run("sign out revokes the session on the server", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		c := f.signIn(t)
		kept := f.signIn(t)
		w := f.do(withCookie(apiRequest(http.MethodDelete, "/api/v1/session", "", ""), c.Value, ""))
		if gone := findCookie(w, "decap_session"); w.Code != 204 || gone == nil || gone.Value != "" || gone.MaxAge >= 0 {
			t.Fatalf("sign out: status %d, cookie %+v; want 204 and the cookie deleted", w.Code, gone)
		}
		// A copy of the cookie kept by an attacker is worthless now.
		if w := f.do(withSession(build1, c.Value)); w.Code != 401 {
			t.Errorf("read with a signed-out session: %d, want 401", w.Code)
		}
		r := withCookie(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "", ""), c.Value, "1")
		if w := f.do(r); w.Code != 401 {
			t.Errorf("mutation with a signed-out session: %d, want 401", w.Code)
		}
		if w := f.do(withSession(build1, kept.Value)); w.Code != 200 {
			t.Errorf("another session after the sign-out: %d, want 200", w.Code)
		}
	})

	t.Run("signing in again revokes the session the browser had", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		old := f.signIn(t)
		r := apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)
		r.AddCookie(&http.Cookie{Name: "decap_session", Value: old.Value})
		if w := f.do(r); w.Code != 204 {
			t.Fatalf("sign in again: %d %s", w.Code, w.Body)
		}
		if w := f.do(withSession(build1, old.Value)); w.Code != 401 {
			t.Errorf("read with the replaced session: %d, want 401", w.Code)
		}
	})

	t.Run("a new API token ends the sessions made with the old one", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		c := f.signIn(t)
		rotated := newFixtureDeps(t, func(cfg *ingest.Config) { cfg.APIToken = "the-new-api-token" }, func(d *ingest.Deps) {
			d.Sessions, d.Records = f.sessions, f.records
		})
		if w := rotated.do(withSession(build1, c.Value)); w.Code != 401 {
			t.Errorf("read with a session of the old token: %d %s, want 401", w.Code, w.Body)
		}
		// Another replica with the same token accepts it: sessions are shared.
		replica := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Sessions, d.Records = f.sessions, f.records })
		if w := replica.do(withSession(build1, c.Value)); w.Code != 200 {
			t.Errorf("read through another replica: %d %s, want 200", w.Code, w.Body)
		}
	})

	t.Run("a session store that cannot answer is 503, not a failed sign-in", func(t *testing.T) {
		t.Parallel()
		f := newFixtureDeps(t, func(c *ingest.Config) { c.AuthFailureLimit = 1 }, func(d *ingest.Deps) { d.Sessions = brokenSessions{} })
		for range 3 {
			if w := f.do(withSession(build1, "some-session-id")); w.Code != 503 {
				t.Fatalf("read with the store down: %d %s, want 503", w.Code, w.Body)
			}
		}
		if w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)); w.Code != 503 {
			t.Errorf("sign in with the store down: %d %s, want 503", w.Code, w.Body)
		}
		if w := f.do(get(build1)); w.Code == 429 {
			t.Errorf("the client was throttled for the store's failures")
		}
	})

	t.Run("without a session store nobody signs in", func(t *testing.T) {
		t.Parallel()
		f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Sessions = nil })
		w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`))
		if w.Code != 501 || findCookie(w, "decap_session") != nil {
			t.Errorf("sign in: %d %s, want 501 and no cookie", w.Code, w.Body)
		}
	})
}

// countingSessions counts the calls made to a session store.
type countingSessions struct {
	ingest.Sessions
	gets, deletes atomic.Int64
}

func (c *countingSessions) Get(ctx context.Context, key string) (build.Session, error) {
	c.gets.Add(1)
	return c.Sessions.Get(ctx, key)
}

func (c *countingSessions) Delete(ctx context.Context, key string) error {
	c.deletes.Add(1)
	return c.Sessions.Delete(ctx, key)
}

// TestSignOutOfMadeUpSessions: DELETE /api/v1/session needs no credential,
// so a made-up cookie must cost the session store no write (a billed
// DynamoDB write, a turn of SQLite's one writer), and a flood of them is
// throttled like any wrong session.
func TestSignOutOfMadeUpSessions(t *testing.T) {
	t.Parallel()
	const attacker = "203.0.113.7:40000"
	var store *countingSessions
	f := newFixtureDeps(t, nil, func(d *ingest.Deps) {
		store = &countingSessions{Sessions: d.Sessions}
		d.Sessions = store
	})
	const flood = 500
	codes := map[int]int{}
	for i := range flood {
		r := withCookie(apiRequest(http.MethodDelete, "/api/v1/session", "", ""), "made-up-"+strconv.Itoa(i), "")
		codes[f.do(from(r, attacker)).Code]++
	}
	if n := store.deletes.Load(); n != 0 {
		t.Errorf("%d sign-outs of made-up sessions made %d store deletes, want none", flood, n)
	}
	if n := store.gets.Load(); n > ingest.DefaultAuthFailureLimit {
		t.Errorf("%d sign-outs of made-up sessions made %d store reads, want at most %d (then the client is throttled)",
			flood, n, ingest.DefaultAuthFailureLimit)
	}
	if codes[204] != ingest.DefaultAuthFailureLimit || codes[429] != flood-ingest.DefaultAuthFailureLimit {
		t.Errorf("answers %v, want %d × 204 (nothing to revoke), then 429", codes, ingest.DefaultAuthFailureLimit)
	}
	// A real session is still revoked on the server.
	c := f.signIn(t)
	w := f.do(withCookie(apiRequest(http.MethodDelete, "/api/v1/session", "", ""), c.Value, ""))
	if gone := findCookie(w, "decap_session"); w.Code != 204 || gone == nil || gone.MaxAge >= 0 {
		t.Fatalf("sign out: %d, cookie %+v; want 204 and the cookie deleted", w.Code, gone)
	}
	if len(f.sessions.Keys()) != 0 || store.deletes.Load() != 1 {
		t.Errorf("after signing out: %d sessions stored, %d deletes; want none left, one delete", len(f.sessions.Keys()), store.deletes.Load())
	}
}

// brokenSessions is a session store that cannot be reached.
type brokenSessions struct{}

func (brokenSessions) Create(context.Context, build.Session) error { return build.ErrUnavailable }
func (brokenSessions) Get(context.Context, string) (build.Session, error) {
	return build.Session{}, errors.Join(build.ErrUnavailable, errors.New("connection refused"))
}
func (brokenSessions) Delete(context.Context, string) error { return build.ErrUnavailable }

// from sets the client address of r.
func from(r *http.Request, addr string) *http.Request {
	r.RemoteAddr = addr
	return r
}

func TestFailedAuthThrottle(t *testing.T) {
	t.Parallel()
	const build1 = "/api/v1/builds/" + string(id1)
	const attacker, bystander = "203.0.113.7:40000", "198.51.100.2:50000"

	t.Run("wrong tokens, then 429 with Retry-After for that client only", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		for i := range ingest.DefaultAuthFailureLimit {
			if w := f.do(from(apiRequest(http.MethodGet, build1, "guess", ""), attacker)); w.Code != 401 {
				t.Fatalf("wrong token %d: status %d, want 401", i+1, w.Code)
			}
		}
		for _, tc := range []struct {
			name string
			req  *http.Request
		}{
			{"another wrong token", apiRequest(http.MethodGet, build1, "guess", "")},
			{"the right token", get(build1)},
			{"a mutation with the right token", apiRequest(http.MethodPost, "/api/v1/dispatch/pause", token, "")},
			{"a sign-in with the right token", apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)},
		} {
			w := f.do(from(tc.req, attacker))
			if want := strconv.Itoa(int(ingest.DefaultAuthBlock.Seconds())); w.Code != 429 || w.Header().Get("Retry-After") != want {
				t.Errorf("%s from the throttled client: status %d, Retry-After %q; want 429, %s", tc.name, w.Code, w.Header().Get("Retry-After"), want)
			}
		}
		if w := f.do(from(get(build1), bystander)); w.Code != 200 {
			t.Errorf("the right token from another client: %d, want 200", w.Code)
		}
		f.clock.Advance(ingest.DefaultAuthBlock - time.Second)
		if w := f.do(from(get(build1), attacker)); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
			t.Errorf("just before the block ends: %d, Retry-After %q; want 429, 1", w.Code, w.Header().Get("Retry-After"))
		}
		f.clock.Advance(time.Second)
		if w := f.do(from(get(build1), attacker)); w.Code != 200 {
			t.Errorf("the right token once the block is over: %d, want 200", w.Code)
		}
		if g, _ := f.gate.Get(context.Background()); g.Paused {
			t.Errorf("a refused mutation paused dispatch")
		}
	})

	t.Run("logged once per window with counts, never the token", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		for range 2000 {
			f.do(from(apiRequest(http.MethodGet, build1, "guess-"+token, ""), attacker))
		}
		lines := logLines(f, "203.0.113.7")
		if len(lines) != 2 || !strings.Contains(lines[0], "failures=1 ") || !strings.Contains(lines[1], "client throttled") ||
			!strings.Contains(lines[1], "failures="+strconv.Itoa(ingest.DefaultAuthFailureLimit-1)+" ") {
			t.Fatalf("log lines about the client after 2000 wrong tokens:\n%s\nwant the first failure, then the block with its count", strings.Join(lines, "\n"))
		}
		f.clock.Advance(time.Minute)
		f.do(from(apiRequest(http.MethodGet, build1, "guess", ""), attacker))
		lines = logLines(f, "203.0.113.7")
		refused := strconv.Itoa(2000 - ingest.DefaultAuthFailureLimit + 1)
		if len(lines) != 3 || !strings.Contains(lines[2], "refused="+refused+" ") {
			t.Errorf("log lines a window later:\n%s\nwant a third line counting %s refused attempts", strings.Join(lines, "\n"), refused)
		}
		if strings.Contains(f.logs.String(), token) || strings.Contains(f.logs.String(), "guess") {
			t.Errorf("the log shows a presented token:\n%s", f.logs)
		}
	})

	t.Run("what counts", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name   string
			req    func() *http.Request
			counts bool
		}{
			{"wrong token on a read", func() *http.Request { return apiRequest(http.MethodGet, build1, "guess", "") }, true},
			{"wrong token on a mutation", func() *http.Request { return apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "guess", "") }, true},
			{"wrong token on sign-in", func() *http.Request {
				return apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"guess"}`)
			}, true},
			{"unknown session", func() *http.Request { return withSession(build1, "forged-session-id") }, true},
			{"no credential", func() *http.Request { return anon(build1) }, false},
			{"no credential on a mutation", func() *http.Request { return apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "", "") }, false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, nil)
				f.seed(t)
				for range ingest.DefaultAuthFailureLimit {
					f.do(tc.req())
				}
				w := f.do(get(build1))
				if tc.counts && w.Code != 429 {
					t.Errorf("after %d of them, the right token got %d, want 429", ingest.DefaultAuthFailureLimit, w.Code)
				}
				if !tc.counts && w.Code != 200 {
					t.Errorf("after %d of them, the right token got %d, want 200", ingest.DefaultAuthFailureLimit, w.Code)
				}
			})
		}
	})

	t.Run("an IPv6 client is its /64", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.AuthFailureLimit = 2 })
		f.seed(t)
		f.do(from(apiRequest(http.MethodGet, build1, "guess", ""), "[2001:db8:1:2::1]:4000"))
		f.do(from(apiRequest(http.MethodGet, build1, "guess", ""), "[2001:db8:1:2::ffff]:4000"))
		if w := f.do(from(get(build1), "[2001:db8:1:2:aaaa::3]:4000")); w.Code != 429 {
			t.Errorf("the same /64: %d, want 429", w.Code)
		}
		if w := f.do(from(get(build1), "[2001:db8:1:3::1]:4000")); w.Code != 200 {
			t.Errorf("another /64: %d, want 200", w.Code)
		}
	})
}

// TestCrossSiteSignInRefused: a page of another site can make its
// visitor's browser POST wrong tokens to /api/v1/session (a no-cors fetch or
// a text/plain form is a simple request, sent without a preflight). Counted
// as failures, 20 of them would block the visitor's address, and with it
// everyone behind the same NAT, for as long as the page keeps at it.
func TestCrossSiteSignInRefused(t *testing.T) {
	t.Parallel()
	const office = "203.0.113.9:40000"
	crossSite := []struct {
		name    string
		headers map[string]string
	}{
		{"Sec-Fetch-Site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}},
		{"Origin alone (an older browser)", map[string]string{"Origin": "https://evil.example"}},
	}
	for _, tc := range crossSite {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			for i := range 2 * ingest.DefaultAuthFailureLimit {
				r := from(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"guess"}`), office)
				r.Header.Set("Content-Type", "text/plain")
				for k, v := range tc.headers {
					r.Header.Set(k, v)
				}
				if w := f.do(r); w.Code != http.StatusForbidden {
					t.Fatalf("cross-site sign-in %d: status %d (%s), want 403", i+1, w.Code, w.Body)
				}
			}
			r := from(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`), office)
			r.Header.Set("Sec-Fetch-Site", "same-origin")
			r.Header.Set("Origin", "http://example.com")
			if w := f.do(r); w.Code != http.StatusNoContent {
				t.Errorf("the UI's own sign-in from the same address afterwards: %d (%s), want 204", w.Code, w.Body)
			}
			if len(f.sessions.Keys()) != 1 {
				t.Errorf("sessions stored: %d, want the one same-origin sign-in", len(f.sessions.Keys()))
			}
		})
	}
}

// TestCrossSiteMutationsWithAuthOff: with DECAP_AUTH=off nothing but the
// Host check stands between a web page and the API, and the Host check
// lets IP literals through. A page of any site the developer visits could
// POST to http://127.0.0.1:8080/... as a simple request (no preflight, no
// DNS rebinding needed): queue builds of commits it names, rebuild, pause
// dispatching. A browser's request from another origin is refused.
func TestCrossSiteMutationsWithAuthOff(t *testing.T) {
	t.Parallel()
	mutations := []struct{ name, path, body string }{
		{"rebuild", rebuildPath(id1), ""},
		{"build request", "/api/v1/projects/decap-ci/hello/builds", `{"ref":"main","sha":"0123456789abcdef0123456789abcdef01234567"}`},
		{"pause", "/api/v1/dispatch/pause", ""},
	}
	browsers := []struct {
		name      string
		headers   map[string]string
		crossSite bool
	}{
		{"Sec-Fetch-Site cross-site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, true},
		{"Origin of another site", map[string]string{"Origin": "https://evil.example"}, true},
		{"the UI itself", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8080", "X-Decap-CSRF": "1"}, false},
		{"a script (no browser headers)", nil, false},
	}
	for _, m := range mutations {
		for _, b := range browsers {
			t.Run(m.name+"/"+b.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, func(c *ingest.Config) { c.APIToken = ""; c.AuthDisabled = true })
				f.seed(t)
				f.queued(t) // the seed's messages out of the way
				r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080"+m.path, strings.NewReader(m.body))
				r.Header.Set("Content-Type", "text/plain")
				for k, v := range b.headers {
					r.Header.Set(k, v)
				}
				w := f.do(r)
				g, _ := f.gate.Get(context.Background())
				changed := len(f.queued(t)) > 0 || g.Paused
				if b.crossSite && (w.Code != http.StatusForbidden || changed) {
					t.Errorf("status %d (%s), something changed: %v; want 403 and nothing done", w.Code, w.Body, changed)
				}
				if !b.crossSite && (w.Code >= 300 || !changed) {
					t.Errorf("status %d (%s), something changed: %v; want it done", w.Code, w.Body, changed)
				}
			})
		}
	}
}

// logLines returns the log lines that mention s.
func logLines(f *fixture, s string) []string {
	var out []string
	for line := range strings.Lines(f.logs.String()) {
		if strings.Contains(line, s) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

func TestHostCheck(t *testing.T) {
	t.Parallel()
	const publicURL = "https://decap.example.com/"
	modes := []struct {
		name string
		cfg  func(*ingest.Config)
	}{
		{"reads public", func(c *ingest.Config) { c.ReadPublic = true; c.PublicURL = publicURL }},
		{"auth off", func(c *ingest.Config) { c.AuthDisabled = true; c.PublicURL = publicURL }},
	}
	hosts := []struct {
		host    string
		allowed bool
	}{
		{"127.0.0.1:8080", true},
		{"127.1.2.3", true},
		{"[::1]:8080", true},
		{"localhost:8080", true},
		{"LOCALHOST", true},
		{"decap.localhost:8080", true},
		{"decap.example.com", true},
		{"Decap.Example.COM.:443", true},
		{"10.0.3.7:8080", true}, // an IP literal: no name to rebind
		{"rebind.attacker.example:8080", false},
		{"localhost.attacker.example", false},
		{"decap.example.com.attacker.example", false},
		{"", false},
	}
	for _, m := range modes {
		for _, h := range hosts {
			t.Run(m.name+"/"+h.host, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, m.cfg)
				f.seed(t)
				r := anon("/api/v1/builds/" + string(id1))
				r.Host = h.host
				w := f.do(r)
				if h.allowed && w.Code != 200 {
					t.Errorf("read with Host %q: %d %s, want 200", h.host, w.Code, w.Body)
				}
				if !h.allowed && (w.Code != 403 || !strings.Contains(decodeJSON(t, w)["error"].(string), "DNS rebinding")) {
					t.Errorf("read with Host %q: %d %s, want 403 naming DNS rebinding", h.host, w.Code, w.Body)
				}
			})
		}
	}
	t.Run("a mutation through a rebound name changes nothing", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.AuthDisabled = true })
		f.seed(t)
		before := f.state(t)
		r := apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "", "")
		r.Host = "rebind.attacker.example:8080"
		if w := f.do(r); w.Code != 403 {
			t.Errorf("pause: %d %s, want 403", w.Code, w.Body)
		}
		if after := f.state(t); after != before {
			t.Errorf("a refused mutation changed the state")
		}
	})
	t.Run("health answers every Host", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.AuthDisabled = true })
		r := anon("/healthz")
		r.Host = "decap-ingest.decap-system.svc:8080"
		if w := f.do(r); w.Code != 200 {
			t.Errorf("/healthz: %d, want 200", w.Code)
		}
	})
	t.Run("with reads behind the token any Host may ask", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		r := get("/api/v1/builds/" + string(id1))
		r.Host = "decap-ingest.decap-system.svc:8080"
		if w := f.do(r); w.Code != 200 {
			t.Errorf("read with the token: %d %s, want 200", w.Code, w.Body)
		}
	})
}

func TestUntrustedContentHeaders(t *testing.T) {
	t.Parallel()
	for _, path := range []string{
		"/api/v1/builds/" + string(id1) + "/log",
		"/api/v1/builds/" + string(id1) + "/log?follow=1",
		"/api/v1/builds/" + string(id1) + "/artifacts",
	} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.seed(t)
			f.seedBlobs(t)
			w := f.do(get(path))
			if w.Code != 200 {
				t.Fatalf("status %d (%s)", w.Code, w.Body)
			}
			h := w.Header()
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Security-Policy") != "sandbox; default-src 'none'" {
				t.Errorf("headers %v: want nosniff and a sandbox CSP", h)
			}
			if strings.Contains(path, "artifacts") && !strings.HasPrefix(h.Get("Content-Disposition"), "attachment;") {
				t.Errorf("Content-Disposition = %q, want an attachment", h.Get("Content-Disposition"))
			}
		})
	}
}

func TestSidecarEnvValuesNeverShown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	w := f.do(get("/api/v1/projects"))
	if w.Code != 200 {
		t.Fatalf("status %d (%s)", w.Code, w.Body)
	}
	body := w.Body.String()
	if strings.Contains(body, sidecarSecret) || strings.Contains(body, `"value"`) {
		t.Errorf("projects show a sidecar env value: %s", body)
	}
	if !strings.Contains(body, `"env":[{"name":"POSTGRES_PASSWORD"},{"name":"POSTGRES_DB"}]`) {
		t.Errorf("projects do not list the sidecar's env names: %s", body)
	}
	// The catalog itself keeps the values: the build needs them.
	d, _, err := f.catalog.Lookup("Codertocat", "Hello-World")
	if err != nil || len(d.Sidecars) != 1 || d.Sidecars[0].Env[0].Value != sidecarSecret {
		t.Errorf("catalog descriptor = %+v, %v; want the sidecar's env value kept", d, err)
	}
}

func TestPages(t *testing.T) {
	t.Parallel()
	page := func(f *fixture) {
		srv := f.srv
		srv.Echo().GET("/ui/thing", func(c echo.Context) error {
			return c.String(http.StatusOK, "page; signed in: "+map[bool]string{true: "yes", false: "no"}[srv.SignedIn(c)])
		}, srv.Pages)
	}
	const path = "/ui/thing?x=1&y=a%2Fb"
	cases := []struct {
		name       string
		cfg        func(*ingest.Config)
		session    string // "valid", "forged" or ""
		wantStatus int
		wantBody   string
	}{
		{"no session: to the sign-in page", nil, "", 302, ""},
		{"forged session: to the sign-in page", nil, "forged", 302, ""},
		{"valid session", nil, "valid", 200, "signed in: yes"},
		{"reads public, no session", func(c *ingest.Config) { c.ReadPublic = true }, "", 200, "signed in: no"},
		{"reads public, forged session", func(c *ingest.Config) { c.ReadPublic = true }, "forged", 200, "signed in: no"},
		{"reads public, valid session", func(c *ingest.Config) { c.ReadPublic = true }, "valid", 200, "signed in: yes"},
		{"auth off", func(c *ingest.Config) { c.AuthDisabled = true }, "", 200, "signed in: no"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.cfg)
			page(f)
			r := anon(path)
			switch tc.session {
			case "valid":
				r = withSession(path, f.signIn(t).Value)
			case "forged":
				r = withSession(path, "forged-session-id")
			}
			w := f.do(r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body, tc.wantStatus)
			}
			if tc.wantStatus == 302 {
				loc, err := url.Parse(w.Header().Get("Location"))
				if err != nil || loc.Path != "/ui/login" || loc.Query().Get("next") != path {
					t.Errorf("Location = %q, want /ui/login?next=%s", w.Header().Get("Location"), path)
				}
				return
			}
			if !strings.HasSuffix(w.Body.String(), tc.wantBody) {
				t.Errorf("body %q, want %q", w.Body, tc.wantBody)
			}
		})
	}
}

// The fake session store satisfies the port ingest declares.
var _ ingest.Sessions = (*buildtest.FakeSessions)(nil)
