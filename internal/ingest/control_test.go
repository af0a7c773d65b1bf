package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

var update = flag.Bool("update", false, "rewrite testdata/api/*.golden.json from the answers")

// Fixed build IDs (UUIDv7 at 03:00, 03:01, … on the fixture's clock), so
// every answer is the same on every run.
const (
	id1 build.ID = "01a21af2-0b80-7000-8000-000000000001"
	id2 build.ID = "01a21af2-f5e0-7000-8000-000000000002"
	id3 build.ID = "01a21af3-e040-7000-8000-000000000003"
	id4 build.ID = "01a21af4-caa0-7000-8000-000000000004"
	id5 build.ID = "01a21af4-caa0-7000-8000-000000000005"
)

// refsOf is one repository's refs in fakeRefs, or the error listing them gives.
type refsOf struct {
	branches, tags []ingest.RefInfo
	err            error
}

// fakeRefs is an in-memory repository manager; unknown repositories are
// build.ErrNotFound.
type fakeRefs struct {
	mu    sync.Mutex
	repos map[string]refsOf
}

func (r *fakeRefs) set(key string, v refsOf) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repos[key] = v
}

func (r *fakeRefs) Refs(ctx context.Context, team, project string) ([]ingest.RefInfo, []ingest.RefInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.repos[build.ProjectKey(team, project)]
	if !ok {
		return nil, nil, fmt.Errorf("github repository %s: %w", build.ProjectKey(team, project), build.ErrNotFound)
	}
	return v.branches, v.tags, v.err
}

// fakeCanceller is an executor's set of running build processes: Cancel
// stops one, and gives build.ErrNotFound for a build it does not run.
type fakeCanceller struct {
	mu      sync.Mutex
	running map[build.ID]bool
	stopped []build.ID
}

func (c *fakeCanceller) start(id build.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running[id] = true
}

func (c *fakeCanceller) Cancel(ctx context.Context, id build.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running[id] {
		return fmt.Errorf("cancel %s: %w", id, build.ErrNotFound)
	}
	delete(c.running, id)
	c.stopped = append(c.stopped, id)
	return nil
}

func (c *fakeCanceller) stoppedIDs() []build.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]build.ID(nil), c.stopped...)
}

// syncBuffer collects a server's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// at returns the fixture clock's start plus d.
func (f *fixture) at(d time.Duration) time.Time {
	return time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC).Add(d)
}

func (f *fixture) save(t *testing.T, r build.Record) {
	t.Helper()
	if err := f.records.Save(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// seed fills the fixture with a fixed history: builds of decap-ci/hello
// (id1 succeeded, id2 failed, id3 running), two waiting requests of
// Codertocat/Hello-World/master on the queue (id4 deferred by the cap, its
// message in flight; id5 queued behind it), two held locks and the refs of
// decap-ci/hello. It leaves the clock at 03:05.
func (f *fixture) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	zero, one := 0, 1
	f.save(t, build.Record{BuildID: id1, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
		SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", Trigger: build.TriggerPush, RequestedBy: "Codertocat",
		DeliveryID: "9d3a4b10-5c4e-11ef-8a7e-1b2c3d4e5f60", Status: build.StatusSucceeded, ExitCode: &zero,
		QueuedAt: f.at(0), StartedAt: f.at(2 * time.Second), FinishedAt: f.at(62 * time.Second),
		LogKey: build.LogKey(id1), ArtifactsKey: build.ArtifactsKey(id1), PodName: id1.PodName(), CatalogCommit: "c0ffee"})
	f.save(t, build.Record{BuildID: id2, Team: "decap-ci", Project: "hello", Ref: "feature/Locks", RefType: build.Branch,
		Trigger: build.TriggerAPI, RequestedBy: "api", Status: build.StatusFailed, ExitCode: &one,
		QueuedAt: f.at(time.Minute), StartedAt: f.at(time.Minute + time.Second), FinishedAt: f.at(time.Minute + 31*time.Second),
		LogKey: build.LogKey(id2), PodName: id2.PodName(), CatalogCommit: "c0ffee", Reason: "build.sh exited with 1"})
	f.save(t, build.Record{BuildID: id3, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
		SHA: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Trigger: build.TriggerPush, RequestedBy: "Codertocat",
		Status: build.StatusRunning, QueuedAt: f.at(2 * time.Minute), StartedAt: f.at(2*time.Minute + time.Second),
		PodName: id3.PodName(), CatalogCommit: "c0ffee"})
	f.canceller.start(id3)

	f.clock.Advance(3 * time.Minute) // 03:03
	for _, id := range []build.ID{id4, id5} {
		req := build.Request{V: build.MessageVersion, BuildID: id, Team: "Codertocat", Project: "Hello-World",
			Ref: "master", RefType: build.Branch, Trigger: build.TriggerPush, RequestedBy: "Codertocat", RequestedAt: f.clock.Now()}
		if err := f.queue.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
		f.save(t, build.RecordFor(req))
	}
	// A dispatcher defers id4 for three minutes: its message is in flight.
	msgs, err := f.queue.Receive(ctx, 1, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %v, %v", msgs, err)
	}
	if err := f.queue.ChangeVisibility(ctx, msgs[0].Receipt, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	deferred, _ := f.records.Get(ctx, id4)
	deferred.Status, deferred.Reason, deferred.NextAttemptAt = build.StatusDeferred, "concurrency cap reached (2)", f.at(6*time.Minute)
	f.save(t, deferred)

	for _, l := range []build.Lease{
		{Key: "decap-ci/hello/main", BuildID: id3, Owner: "dispatcher-7f9c", AcquiredAt: f.at(2 * time.Minute), ExpiresAt: f.at(2*time.Minute + time.Hour)},
		{Key: "Codertocat/Hello-World/feature/Locks", BuildID: id1, Owner: "dispatcher-7f9c", AcquiredAt: f.at(0), ExpiresAt: f.at(time.Hour)},
	} {
		if err := f.locks.Acquire(ctx, l, 0); err != nil {
			t.Fatal(err)
		}
	}
	f.refs.set("decap-ci/hello", refsOf{
		branches: []ingest.RefInfo{{Name: "feature/Locks", SHA: "5a9e8c1f0b7d4e3a2c6b8d9e0f1a2b3c4d5e6f70"}, {Name: "main", SHA: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}},
		tags:     []ingest.RefInfo{{Name: "v1.0", SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246"}},
	})
	f.clock.Advance(2 * time.Minute) // 03:05
}

// golden compares an answer byte for byte with testdata/api/<name>.golden.json,
// or rewrites the file with -update.
func golden(t *testing.T, name string, w *httptest.ResponseRecorder) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	path := filepath.Join("testdata", "api", name+".golden.json")
	got := w.Body.Bytes()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/ingest/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("answer differs from %s (-want +got, indented here for reading; the comparison is byte for byte; -update rewrites it):\n%s",
			path, cmp.Diff(indent(want), indent(got)))
	}
}

func indent(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}

// get is a read with the API token.
func get(path string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// TestGoldenAPI pins the exact JSON of the API's answers.
func TestGoldenAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.seed(t)
	if w := f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", token, `{"reason":"upgrading the cluster"}`)); w.Code != 200 {
		t.Fatalf("pause: %d %s", w.Code, w.Body)
	}
	tests := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"build", get("/api/v1/builds/" + string(id1)), 200},
		{"project-builds", get("/api/v1/projects/decap-ci/hello/builds?limit=2"), 200},
		{"projects", get("/api/v1/projects"), 200},
		{"queue", get("/api/v1/queue"), 200},
		{"running-builds", get("/api/v1/builds?status=running"), 200},
		{"locks", get("/api/v1/locks"), 200},
		{"dispatch", get("/api/v1/dispatch"), 200},
		{"refs", get("/api/v1/projects/decap-ci/hello/refs"), 200},
		{"error", apiRequest(http.MethodDelete, "/api/v1/builds/"+string(id1), token, ""), 409},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(tt.req)
			if w.Code != tt.want {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.want)
			}
			golden(t, tt.name, w)
		})
	}
}

// withCookie authenticates r by the session cookie; csrf is the
// X-Decap-CSRF header's value ("" = none).
func withCookie(r *http.Request, value, csrf string) *http.Request {
	r.AddCookie(&http.Cookie{Name: "decap_session", Value: value})
	if csrf != "" {
		r.Header.Set("X-Decap-CSRF", csrf)
	}
	return r
}

// state is what a mutation may change, to check that a refused one did not.
func (f *fixture) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	g, _ := f.gate.Get(ctx)
	locks, _ := f.locks.List(ctx)
	waiting, _, _ := f.records.Waiting(ctx, 0, 0)
	stats, _ := f.queue.Stats(ctx)
	b, err := json.Marshal([]any{g, locks, waiting, stats, f.canceller.stoppedIDs()})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMutationAuth(t *testing.T) {
	t.Parallel()
	endpoints := []struct {
		name, method, path, body string
		ok                       int
	}{
		{"request build", http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", `{"ref":"main"}`, 202},
		{"cancel queued", http.MethodDelete, "/api/v1/builds/" + string(id5), "", 200},
		{"cancel running", http.MethodDelete, "/api/v1/builds/" + string(id3), "", 202},
		{"release lock", http.MethodDelete, "/api/v1/locks/Codertocat/Hello-World/feature/Locks", "", 200},
		{"pause", http.MethodPost, "/api/v1/dispatch/pause", `{"reason":"x"}`, 200},
		{"resume", http.MethodPost, "/api/v1/dispatch/resume", "", 200},
		{"rebuild", http.MethodPost, "/api/v1/builds/" + string(id1) + "/rebuild", "", 202},
	}
	cases := []struct {
		name       string
		authOff    bool
		auth       func(r *http.Request, session string)
		wantStatus int // 0: the endpoint's success
		wantError  string
	}{
		{"no token", false, func(*http.Request, string) {}, 401, "API token"},
		{"wrong token", false, func(r *http.Request, _ string) { r.Header.Set("Authorization", "Bearer nope") }, 401, "API token"},
		{"not a bearer token", false, func(r *http.Request, _ string) { r.Header.Set("Authorization", "Basic "+token) }, 401, "API token"},
		{"empty bearer token", false, func(r *http.Request, _ string) { r.Header.Set("Authorization", "Bearer ") }, 401, "API token"},
		{"wrong cookie", false, func(r *http.Request, _ string) { withCookie(r, "nope", "1") }, 401, "session is not valid"},
		{"the API token as the cookie", false, func(r *http.Request, _ string) { withCookie(r, token, "1") }, 401, "session is not valid"},
		{"cookie without csrf header", false, func(r *http.Request, session string) { withCookie(r, session, "") }, 403, "missing X-Decap-CSRF header"},
		{"cookie with wrong csrf value", false, func(r *http.Request, session string) { withCookie(r, session, "true") }, 403, "missing X-Decap-CSRF header"},
		{"wrong bearer beats good cookie", false, func(r *http.Request, session string) {
			withCookie(r, session, "1")
			r.Header.Set("Authorization", "Bearer nope")
		}, 401, "API token"},
		{"cookie with csrf header", false, func(r *http.Request, session string) { withCookie(r, session, "1") }, 0, ""},
		{"bearer token", false, func(r *http.Request, _ string) { r.Header.Set("Authorization", "Bearer "+token) }, 0, ""},
		{"auth off", true, func(*http.Request, string) {}, 0, ""},
	}
	for _, ep := range endpoints {
		for _, tc := range cases {
			t.Run(ep.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, func(c *ingest.Config) { c.AuthDisabled = tc.authOff })
				f.seed(t)
				before := f.state(t)
				session := ""
				if !tc.authOff {
					session = f.signIn(t).Value
				}
				r := httptest.NewRequest(ep.method, ep.path, strings.NewReader(ep.body))
				tc.auth(r, session)
				w := f.do(r)
				want := tc.wantStatus
				if want == 0 {
					want = ep.ok
				}
				if w.Code != want {
					t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, want)
				}
				body := decodeJSON(t, w)
				if tc.wantError != "" {
					if got, _ := body["error"].(string); !strings.Contains(got, tc.wantError) {
						t.Errorf("error = %q, want it to contain %q", got, tc.wantError)
					}
					if after := f.state(t); after != before {
						t.Errorf("a refused mutation changed the state:\nbefore %s\nafter  %s", before, after)
					}
				}
				if strings.Contains(w.Body.String(), token) || strings.Contains(f.logs.String(), token) {
					t.Errorf("the answer or the log shows the API token")
				}
			})
		}
	}
}

func TestSession(t *testing.T) {
	t.Parallel()
	sessionCookie := func(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
		t.Helper()
		for _, c := range w.Result().Cookies() {
			if c.Name == "decap_session" {
				return c
			}
		}
		return nil
	}
	t.Run("sign in", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`))
		if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
			t.Fatalf("status = %d (%s), want 204 without body", w.Code, w.Body)
		}
		c := sessionCookie(t, w)
		if c == nil {
			t.Fatalf("no decap_session cookie in %q", w.Header().Values("Set-Cookie"))
		}
		got := []any{c.Value == token, c.HttpOnly, c.SameSite, c.Path, c.Secure, c.MaxAge}
		if diff := cmp.Diff([]any{false, true, http.SameSiteStrictMode, "/", false, int(ingest.DefaultSessionTTL.Seconds())}, got); diff != "" {
			t.Errorf("cookie value is the token, HttpOnly, SameSite, Path, Secure, MaxAge (-want +got):\n%s", diff)
		}
		// The cookie then authenticates a mutation that carries the CSRF header.
		r := withCookie(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", "", ""), c.Value, "1")
		if w := f.do(r); w.Code != 200 || decodeJSON(t, w)["by"] != "ui" {
			t.Errorf("pause with the cookie: %d %s, want 200 by ui", w.Code, w.Body)
		}
		if strings.Contains(f.logs.String(), token) {
			t.Errorf("the log shows the API token:\n%s", f.logs)
		}
	})
	t.Run("over TLS the cookie is Secure", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		r := httptest.NewRequest(http.MethodPost, "https://decap.example/api/v1/session", strings.NewReader(`{"token":"`+token+`"}`))
		w := f.do(r)
		if c := sessionCookie(t, w); w.Code != 204 || c == nil || !c.Secure {
			t.Errorf("status %d, cookie %+v; want 204 and a Secure cookie", w.Code, c)
		}
	})
	t.Run("behind a TLS-terminating proxy the cookie is Secure", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		r := apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)
		r.Header.Set("X-Forwarded-Proto", "https")
		r.RemoteAddr = "10.0.3.7:41234" // the proxy, on the private network
		if c := sessionCookie(t, f.do(r)); c == nil || !c.Secure {
			t.Errorf("cookie %+v, want a Secure cookie", c)
		}
		// A client on a public address cannot claim TLS.
		r = apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)
		r.Header.Set("X-Forwarded-Proto", "https")
		if c := sessionCookie(t, f.do(r)); c == nil || c.Secure {
			t.Errorf("cookie %+v, want a cookie without Secure", c)
		}
	})
	t.Run("behind a trusted proxy on a public address the cookie is Secure", func(t *testing.T) {
		t.Parallel()
		// A CDN in front of ingest connects from public addresses, listed
		// in DECAP_TRUSTED_PROXIES.
		f := newFixture(t, func(c *ingest.Config) {
			c.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		})
		r := apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"`+token+`"}`)
		r.Header.Set("X-Forwarded-Proto", "https")
		r.Header.Set("X-Forwarded-For", "203.0.113.50")
		r.RemoteAddr = "198.51.100.7:41234"
		if c := sessionCookie(t, f.do(r)); c == nil || !c.Secure {
			t.Errorf("cookie %+v, want a Secure cookie", c)
		}
	})
	t.Run("sign out", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(withCookie(apiRequest(http.MethodDelete, "/api/v1/session", "", ""), token, ""))
		c := sessionCookie(t, w)
		if w.Code != 204 || c == nil || c.Value != "" || c.MaxAge >= 0 || !c.HttpOnly || c.Path != "/" {
			t.Errorf("status %d, cookie %+v; want 204 and an expired, empty decap_session cookie", w.Code, c)
		}
	})
	refused := []struct {
		name       string
		cfg        func(*ingest.Config)
		body       string
		wantStatus int
		wantError  string
	}{
		{"wrong token", nil, `{"token":"guess"}`, 401, "wrong API token"},
		{"empty token", nil, `{"token":""}`, 401, "wrong API token"},
		{"no token configured", func(c *ingest.Config) { c.APIToken = "" }, `{"token":""}`, 401, "wrong API token"},
		{"not json", nil, `token=` + token, 400, "must be JSON"},
		{"unknown field", nil, `{"token":"x","user":"root"}`, 400, "must be JSON"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", tt.body))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			if got, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(got, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if c := sessionCookie(t, w); c != nil {
				t.Errorf("set cookie %+v, want none", c)
			}
			if strings.Contains(w.Body.String(), token) || strings.Contains(f.logs.String(), token) ||
				strings.Contains(f.logs.String(), "two words") {
				t.Errorf("the answer or the log shows a token")
			}
		})
	}
	t.Run("a token a cookie could not hold signs in: the cookie holds a session ID", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.APIToken = "two words; \"quoted\"" })
		w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":"two words; \"quoted\""}`))
		if c := sessionCookie(t, w); w.Code != 204 || c == nil || strings.Contains(c.Value, "two") {
			t.Errorf("status %d (%s), cookie %+v; want 204 and a session cookie", w.Code, w.Body, c)
		}
	})
	t.Run("auth off", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.AuthDisabled = true })
		w := f.do(apiRequest(http.MethodPost, "/api/v1/session", "", `{"token":""}`))
		if w.Code != 204 || sessionCookie(t, w) != nil {
			t.Errorf("status %d, cookies %q; want 204 and no cookie", w.Code, w.Header().Values("Set-Cookie"))
		}
	})
}

func TestRefs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		path       string
		refs       *refsOf // set on decap-ci/hello
		noRefs     bool
		wantStatus int
		wantError  string
	}{
		{"no tags", "/api/v1/projects/decap-ci/hello/refs", &refsOf{branches: []ingest.RefInfo{{Name: "main", SHA: "abc1234"}}}, false, 200, ""},
		{"unknown project", "/api/v1/projects/decap-ci/nothing/refs", nil, false, 404, "decap-ci/nothing"},
		{"unbuildable project", "/api/v1/projects/decap-ci/broken/refs", nil, false, 422, "not buildable"},
		{"hostile project", "/api/v1/projects/decap-ci/..%2F..%2Fetc/refs", nil, false, 400, "project"},
		{"no repository manager", "/api/v1/projects/decap-ci/hello/refs", nil, true, 501, "no repository manager configured"},
		{"repository gone", "/api/v1/projects/decap-ci/hello/refs", nil, false, 404, "repository of decap-ci/hello"},
		{"manager unavailable", "/api/v1/projects/decap-ci/hello/refs",
			&refsOf{err: fmt.Errorf("github: rate limited: %w", build.ErrUnavailable)}, false, 503, "repository manager is unavailable"},
		{"manager timed out", "/api/v1/projects/decap-ci/hello/refs",
			&refsOf{err: fmt.Errorf("github: %w", context.DeadlineExceeded)}, false, 503, "repository manager is unavailable"},
		{"manager failed", "/api/v1/projects/decap-ci/hello/refs",
			&refsOf{err: errors.New("github: 500 Internal Server Error")}, false, 502, "repository manager failed to list the refs of decap-ci/hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, nil, func(d *ingest.Deps) {
				if tt.noRefs {
					d.Refs = nil
				}
			})
			if tt.refs != nil {
				f.refs.set("decap-ci/hello", *tt.refs)
			}
			w := f.do(get(tt.path))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			body := decodeJSON(t, w)
			if tt.wantError == "" {
				want := map[string]any{"branches": []any{map[string]any{"name": "main", "sha": "abc1234"}}, "tags": []any{}}
				if diff := cmp.Diff(want, body); diff != "" {
					t.Errorf("refs (-want +got):\n%s", diff)
				}
				return
			}
			if got, _ := body["error"].(string); !strings.Contains(got, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if tt.wantStatus >= 500 && strings.Contains(body["error"].(string), "github:") {
				t.Errorf("error %q shows the upstream's message; it belongs in the log", body["error"])
			}
		})
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	cancelReq := func(id build.ID) *http.Request {
		return apiRequest(http.MethodDelete, "/api/v1/builds/"+string(id), token, "")
	}
	t.Run("queued: recorded as cancelled", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		w := f.do(cancelReq(id5))
		if w.Code != 200 {
			t.Fatalf("status = %d (%s), want 200", w.Code, w.Body)
		}
		var got build.Record
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		stored, _ := f.records.Get(context.Background(), id5)
		want := stored
		want.Status, want.Reason, want.FinishedAt = build.StatusCancelled, "cancelled by api", f.clock.Now()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("answered record (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, stored); diff != "" {
			t.Errorf("stored record (-want +got):\n%s", diff)
		}
		if s := f.canceller.stoppedIDs(); len(s) != 0 {
			t.Errorf("stopped %v, want nothing stopped", s)
		}
	})
	t.Run("deferred, from the UI: cancelled, next attempt dropped", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		w := f.do(withCookie(apiRequest(http.MethodDelete, "/api/v1/builds/"+string(id4), "", ""), f.signIn(t).Value, "1"))
		if w.Code != 200 {
			t.Fatalf("status = %d (%s), want 200", w.Code, w.Body)
		}
		rec, _ := f.records.Get(context.Background(), id4)
		if rec.Status != build.StatusCancelled || rec.Reason != "cancelled by ui" || !rec.NextAttemptAt.IsZero() || !rec.FinishedAt.Equal(f.clock.Now()) {
			t.Errorf("stored record = %+v, want cancelled by ui, finished now, no next attempt", rec)
		}
	})
	t.Run("queued but launched meanwhile: ingest stops nothing itself", func(t *testing.T) {
		t.Parallel()
		// The dispatcher stops it when its running record is refused, or
		// the reaper's reconciliation does (reap's
		// TestReconcileStopsBuildsWhoseRecordEndedBeforeTheyStarted).
		f := newFixture(t, nil)
		f.seed(t)
		f.canceller.start(id5)
		if w := f.do(cancelReq(id5)); w.Code != 200 {
			t.Fatalf("status = %d (%s), want 200", w.Code, w.Body)
		}
		if s := f.canceller.stoppedIDs(); len(s) != 0 {
			t.Errorf("stopped %v, want nothing: the record says it all", s)
		}
	})
	t.Run("running: the executor stops it", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		w := f.do(cancelReq(id3))
		if w.Code != 202 {
			t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
		}
		if diff := cmp.Diff(map[string]any{"id": string(id3), "status": "cancelling"}, decodeJSON(t, w)); diff != "" {
			t.Errorf("answer (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]build.ID{id3}, f.canceller.stoppedIDs()); diff != "" {
			t.Errorf("stopped (-want +got):\n%s", diff)
		}
		if rec, _ := f.records.Get(context.Background(), id3); rec.Status != build.StatusRunning {
			t.Errorf("record status = %s, want running until the reaper records the end", rec.Status)
		}
	})
	conflicts := []struct {
		name       string
		prepare    func(f *fixture)
		id         build.ID
		deps       func(*ingest.Deps)
		wantStatus int
		wantError  string
	}{
		{"succeeded", nil, id1, nil, 409, "build " + string(id1) + " already succeeded"},
		{"failed", nil, id2, nil, 409, "already failed"},
		{"timed out", func(f *fixture) {
			r, _ := f.records.Get(context.Background(), id2)
			r.BuildID, r.Status = "01a21af4-caa0-7000-8000-000000000006", build.StatusTimedOut
			f.records.Save(context.Background(), r)
		}, "01a21af4-caa0-7000-8000-000000000006", nil, 409, "already timed out"},
		{"running, but the process is gone", func(f *fixture) { f.canceller.Cancel(context.Background(), id3) }, id3, nil, 409, "no longer running"},
		{"running, no executor", nil, id3, func(d *ingest.Deps) { d.Canceller = nil }, 501, "no executor"},
		{"unknown", nil, "01a21af4-caa0-7000-8000-0000000000ff", nil, 404, "not found"},
		{"malformed id", nil, "..%2F..%2Fetc", nil, 400, "not a UUID"},
	}
	for _, tt := range conflicts {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, nil, tt.deps)
			f.seed(t)
			if tt.prepare != nil {
				tt.prepare(f)
			}
			before := f.state(t)
			w := f.do(cancelReq(tt.id))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			if got, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(got, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if after := f.state(t); after != before {
				t.Errorf("a refused cancel changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestQueue(t *testing.T) {
	t.Parallel()
	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(get("/api/v1/queue"))
		want := map[string]any{
			"stats":        map[string]any{"visible": 0.0, "inFlight": 0.0, "deadLettered": 0.0, "oldestAgeNanos": 0.0},
			"waiting":      []any{},
			"waitingTotal": 0.0,
		}
		if diff := cmp.Diff(want, decodeJSON(t, w)); w.Code != 200 || diff != "" {
			t.Errorf("status %d, answer (-want +got):\n%s", w.Code, diff)
		}
	})
	t.Run("a page of the waiting requests, with their number", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t) // id4 and id5 wait, oldest first
		for _, c := range []struct {
			query string
			want  []string
		}{
			{"?limit=1", []string{string(id4)}},
			{"?offset=1&limit=5", []string{string(id5)}},
			{"?offset=2", nil},
			{"", []string{string(id4), string(id5)}},
		} {
			ans := decodeJSON(t, f.do(get("/api/v1/queue"+c.query)))
			var ids []string
			for _, w := range ans["waiting"].([]any) {
				ids = append(ids, w.(map[string]any)["id"].(string))
			}
			if !slices.Equal(ids, c.want) || ans["waitingTotal"] != 2.0 {
				t.Errorf("GET /api/v1/queue%s: waiting %v of %v, want %v of 2", c.query, ids, ans["waitingTotal"], c.want)
			}
		}
		for _, q := range []string{"?limit=0", "?limit=1001", "?offset=-1", "?offset=x", "?limit=1e3"} {
			if w := f.do(get("/api/v1/queue" + q)); w.Code != http.StatusBadRequest {
				t.Errorf("GET /api/v1/queue%s: %d %s, want 400", q, w.Code, w.Body)
			}
		}
	})
	t.Run("cancelled requests are not waiting", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.seed(t)
		if w := f.do(apiRequest(http.MethodDelete, "/api/v1/builds/"+string(id4), token, "")); w.Code != 200 {
			t.Fatalf("cancel: %d %s", w.Code, w.Body)
		}
		waiting := decodeJSON(t, f.do(get("/api/v1/queue")))["waiting"].([]any)
		if len(waiting) != 1 || waiting[0].(map[string]any)["id"] != string(id5) {
			t.Errorf("waiting = %v, want only %s", waiting, id5)
		}
	})
	for _, missing := range []string{"queue", "waiting"} {
		t.Run("no "+missing, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, nil, func(d *ingest.Deps) {
				if missing == "queue" {
					d.Queue = nil
				} else {
					d.Waiting = nil
				}
			})
			if w := f.do(get("/api/v1/queue")); w.Code != 501 {
				t.Errorf("status %d, want 501", w.Code)
			}
		})
	}
}

func TestLocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, path string
		noLocks            bool
		wantStatus         int
		wantKey            string // the lease's or the released key
		wantError          string
	}{
		{"get", http.MethodGet, "/api/v1/locks/decap-ci/hello/main", false, 200, "decap-ci/hello/main", ""},
		{"get a ref with slashes", http.MethodGet, "/api/v1/locks/Codertocat/Hello-World/feature/Locks", false, 200, "Codertocat/Hello-World/feature/Locks", ""},
		{"get an escaped ref", http.MethodGet, "/api/v1/locks/Codertocat/Hello-World/feature%2FLocks", false, 200, "Codertocat/Hello-World/feature/Locks", ""},
		{"get a free key", http.MethodGet, "/api/v1/locks/decap-ci/hello/feature/Locks", false, 404, "", "nobody holds it"},
		{"get without ref", http.MethodGet, "/api/v1/locks/decap-ci/hello/", false, 400, "", "ref is empty"},
		{"get a hostile ref", http.MethodGet, "/api/v1/locks/decap-ci/hello/a/../../b", false, 400, "", "not a valid git ref name"},
		{"get a hostile escaped ref", http.MethodGet, "/api/v1/locks/decap-ci/hello/%2E%2E%2Fx", false, 400, "", "not a valid git ref name"},
		{"get a hostile team", http.MethodGet, "/api/v1/locks/..%2F..%2Fetc/hello/main", false, 400, "", "team"},
		{"release", http.MethodDelete, "/api/v1/locks/Codertocat/Hello-World/feature/Locks", false, 200, "Codertocat/Hello-World/feature/Locks", ""},
		{"release a free key", http.MethodDelete, "/api/v1/locks/decap-ci/hello/other", false, 404, "", "nobody holds it"},
		{"release a hostile key", http.MethodDelete, "/api/v1/locks/decap-ci/hello/x~1", false, 400, "", "ref"},
		{"list without a lock store", http.MethodGet, "/api/v1/locks", true, 501, "", "no lock store"},
		{"get without a lock store", http.MethodGet, "/api/v1/locks/decap-ci/hello/main", true, 501, "", "no lock store"},
		{"release without a lock store", http.MethodDelete, "/api/v1/locks/decap-ci/hello/main", true, 501, "", "no lock store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, nil, func(d *ingest.Deps) {
				if tt.noLocks {
					d.Locks = nil
				}
			})
			f.seed(t)
			before := f.state(t)
			w := f.do(apiRequest(tt.method, tt.path, token, ""))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			body := decodeJSON(t, w)
			if tt.wantError != "" {
				if got, _ := body["error"].(string); !strings.Contains(got, tt.wantError) {
					t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
				}
				if after := f.state(t); after != before {
					t.Errorf("a refused request changed the state:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			held, _ := f.locks.List(context.Background())
			if tt.method == http.MethodGet {
				if body["lockKey"] != tt.wantKey || body["buildId"] == "" {
					t.Errorf("lease = %v, want the lease of %s", body, tt.wantKey)
				}
				return
			}
			if diff := cmp.Diff(map[string]any{"released": tt.wantKey}, body); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if len(held) != 1 || held[0].Key == tt.wantKey {
				t.Errorf("held after release: %+v, want only the other lock", held)
			}
		})
	}
	t.Run("none held", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(get("/api/v1/locks"))
		if diff := cmp.Diff(map[string]any{"locks": []any{}}, decodeJSON(t, w)); diff != "" {
			t.Errorf("answer (-want +got):\n%s", diff)
		}
	})
}

func TestDispatchGate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("open by default", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(get("/api/v1/dispatch"))
		if diff := cmp.Diff(map[string]any{"paused": false}, decodeJSON(t, w)); w.Code != 200 || diff != "" {
			t.Errorf("status %d, answer (-want +got):\n%s", w.Code, diff)
		}
	})
	t.Run("pause with a reason, then resume", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", token, `{"reason":"  upgrading the cluster "}`))
		want := build.GateState{Paused: true, Reason: "upgrading the cluster", By: "api", Since: f.clock.Now()}
		var got build.GateState
		if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != 200 || err != nil {
			t.Fatalf("pause: %d %s", w.Code, w.Body)
		}
		stored, _ := f.gate.Get(ctx)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("answered gate (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, stored); diff != "" {
			t.Errorf("stored gate (-want +got):\n%s", diff)
		}
		w = f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/resume", token, ""))
		if diff := cmp.Diff(map[string]any{"paused": false}, decodeJSON(t, w)); w.Code != 200 || diff != "" {
			t.Errorf("resume: status %d, answer (-want +got):\n%s", w.Code, diff)
		}
		if stored, _ := f.gate.Get(ctx); stored != (build.GateState{}) {
			t.Errorf("stored gate after resume = %+v, want open", stored)
		}
	})
	t.Run("pause without a body", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		w := f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", token, ""))
		if diff := cmp.Diff(map[string]any{"paused": true, "by": "api", "since": "2026-11-27T03:00:00Z"}, decodeJSON(t, w)); w.Code != 200 || diff != "" {
			t.Errorf("status %d, answer (-want +got):\n%s", w.Code, diff)
		}
	})
	bad := []struct{ name, body, wantError string }{
		{"not json", `pause!`, "must be empty or JSON"},
		{"unknown field", `{"reason":"x","until":"tomorrow"}`, "unknown field"},
		{"reason too long", `{"reason":"` + strings.Repeat("x", 501) + `"}`, "longer than 500"},
		{"control characters", `{"reason":"a\u001b[31mred"}`, "control characters"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w := f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", token, tt.body))
			if w.Code != 400 {
				t.Fatalf("status = %d (%s), want 400", w.Code, w.Body)
			}
			if got, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(got, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if g, _ := f.gate.Get(ctx); g.Paused {
				t.Errorf("gate paused by a bad request")
			}
		})
	}
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/dispatch"}, {http.MethodPost, "/api/v1/dispatch/pause"}, {http.MethodPost, "/api/v1/dispatch/resume"},
	} {
		t.Run("no gate "+r.path, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Gate = nil })
			w := f.do(apiRequest(r.method, r.path, token, ""))
			if got, _ := decodeJSON(t, w)["error"].(string); w.Code != 501 || !strings.Contains(got, "no dispatch gate configured") {
				t.Errorf("status %d error %q, want 501 naming the missing gate", w.Code, got)
			}
		})
	}
}

func TestTriggerNamesWhoAsked(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		auth        func(r *http.Request, session string)
		wantTrigger build.Trigger
	}{
		{"token: another program", func(r *http.Request, _ string) { r.Header.Set("Authorization", "Bearer "+token) }, build.TriggerAPI},
		{"session: a person in the UI", func(r *http.Request, session string) { withCookie(r, session, "1") }, build.TriggerManual},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			r := apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", "", `{"ref":"main"}`)
			tt.auth(r, f.signIn(t).Value)
			if w := f.do(r); w.Code != 202 {
				t.Fatalf("status %d (%s)", w.Code, w.Body)
			}
			reqs := f.queued(t)
			if len(reqs) != 1 || reqs[0].Trigger != tt.wantTrigger {
				t.Errorf("queued %+v, want one request with trigger %s", reqs, tt.wantTrigger)
			}
		})
	}
}

// recordingNotifier records what it hears.
type recordingNotifier struct {
	mu      sync.Mutex
	queued  []build.ID
	ended   []build.Record
	waiting []build.PullRequestState
}

func (n *recordingNotifier) PullRequestWaiting(_ context.Context, p build.PullRequestState) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.waiting = append(n.waiting, p)
	return nil
}

func (n *recordingNotifier) BuildQueued(_ context.Context, rec build.Record) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.queued = append(n.queued, rec.BuildID)
	return nil
}

func (n *recordingNotifier) BuildEnded(_ context.Context, rec build.Record) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ended = append(n.ended, rec)
	return nil
}

func (n *recordingNotifier) counts() (int, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queued), len(n.ended)
}

func TestNotifierHearsQueuedAndCancelled(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	n := &recordingNotifier{}
	records := buildtest.NewRecords()
	srv := ingest.New(ingest.Config{WebhookSecret: []byte(secret), APIToken: token}, ingest.Deps{
		Publisher: buildtest.NewQueue(clock.Now, buildtest.QueueOptions{}), Idempotency: buildtest.NewIdempotency(clock.Now),
		Catalog: buildtest.NewCatalog("c0ffee", map[string]string{"decap-ci/hello": `{"buildImage":"x"}`}),
		Records: records, Blobs: buildtest.NewBlobs(), Notifier: n, Now: clock.Now,
	})
	do := func(r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	body := pushBody("decap-ci", "hello", "refs/heads/main")
	for range 2 { // a delivery and its redelivery: one build, one status
		if w := do(hook("push", "d-notify", body)); w.Code != 202 {
			t.Fatalf("push: %d %s", w.Code, w.Body)
		}
	}
	waitUntil(t, "the queued notice", func() bool { q, _ := n.counts(); return q == 1 })
	list, _, _ := records.ListProject(context.Background(), "decap-ci", "hello", 10, "")
	if w := do(apiRequest(http.MethodDelete, "/api/v1/builds/"+string(list[0].BuildID), token, "")); w.Code != 200 {
		t.Fatalf("cancel: %d %s", w.Code, w.Body)
	}
	waitUntil(t, "the ended notice", func() bool { _, e := n.counts(); return e == 1 })
	time.Sleep(50 * time.Millisecond)
	if q, e := n.counts(); q != 1 || e != 1 || n.ended[0].Status != build.StatusCancelled {
		t.Errorf("heard %d queued and %d ended (%+v), want 1 and 1 cancelled", q, e, n.ended)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunningBuilds checks GET /api/v1/builds?status=running: the running
// records, whoever holds their lock (a build whose lock was force-released
// still runs and is listed), and 400 for any other status.
func TestRunningBuilds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.seed(t)
	if w := f.do(apiRequest(http.MethodDelete, "/api/v1/locks/decap-ci/hello/main", token, "")); w.Code != 200 {
		t.Fatalf("force-release: %d %s", w.Code, w.Body)
	}
	builds := decodeJSON(t, f.do(get("/api/v1/builds?status=running")))["builds"].([]any)
	if len(builds) != 1 || builds[0].(map[string]any)["id"] != string(id3) {
		t.Errorf("running builds after the force-release: %v, want %s alone", builds, id3)
	}
	for _, q := range []string{"", "?status=queued", "?status=" + strings.Repeat("x", 100)} {
		if w := f.do(get("/api/v1/builds" + q)); w.Code != 400 || !strings.Contains(w.Body.String(), "status=running") {
			t.Errorf("GET /api/v1/builds%s: %d %s, want 400 naming status=running", q, w.Code, w.Body)
		}
	}
}

// TestProjectsListSkippedEntries checks that GET /api/v1/projects says
// which entries of the build-scripts repository the catalog skipped for
// their names (they were only in a log line), and leaves them out when
// the list is filtered by team.
func TestProjectsListSkippedEntries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	skipped := []string{`"acme/my project": invalid project name`}
	f.catalog.SetSkipped(skipped)
	got := decodeJSON(t, f.do(get("/api/v1/projects")))["skipped"]
	if fmt.Sprint(got) != fmt.Sprint([]any{skipped[0]}) {
		t.Errorf("skipped = %v, want %v", got, skipped)
	}
	if got, ok := decodeJSON(t, f.do(get("/api/v1/projects?team=decap-ci")))["skipped"]; ok {
		t.Errorf("skipped with ?team= = %v, want none", got)
	}
}

// TestErrorMessagesSayItOnce checks the words of the errors a newcomer
// meets first: each says what is wrong once, without the store's or the
// catalog's internals ("project X is not buildable: invalid: project X is
// not buildable: …", "build X: get record X: not found", "project X:
// project X at catalog commit dir:0c79…: not found").
func TestErrorMessagesSayItOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.seed(t)
	unknown := build.NewID(f.clock.Now())
	tests := []struct {
		name string
		req  *http.Request
		code int
		want string
	}{
		{"build of an unknown project", apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/nope/builds", token, `{"ref":"main"}`), 404,
			"project decap-ci/nope is not in the build-scripts repository"},
		{"refs of an unknown project", get("/api/v1/projects/decap-ci/nope/refs"), 404,
			"project decap-ci/nope is not in the build-scripts repository"},
		{"build of an unbuildable project", apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/broken/builds", token, `{"ref":"main"}`), 422,
			"project decap-ci/broken is not buildable: project.json: managedRefRegex does not compile: error parsing regexp: missing closing ): `(unclosed`"},
		{"an unknown build", get("/api/v1/builds/" + string(unknown)), 404, "build " + string(unknown) + " not found"},
		{"the log of an unknown build", get("/api/v1/builds/" + string(unknown) + "/log"), 404, "build " + string(unknown) + " not found"},
	}
	for _, tt := range tests {
		w := f.do(tt.req)
		if got := decodeJSON(t, w)["error"]; w.Code != tt.code || got != tt.want {
			t.Errorf("%s: %d %q, want %d %q", tt.name, w.Code, got, tt.code, tt.want)
		}
	}
	// A missing and a wrong token are told apart, and both say which token
	// is meant and where a local run keeps it.
	for _, tt := range []struct{ name, token, want string }{
		{"no token", "", "unauthorized: no credential: send the API token (Authorization: Bearer <token>; the token is the services' DECAP_API_TOKEN; make run keeps it in .decap/api-token) or sign in at /ui/login"},
		{"a wrong token", "guess-guess-guess", "unauthorized: bad credential: the API token is wrong (the token is the services' DECAP_API_TOKEN; make run keeps it in .decap/api-token)"},
	} {
		w := f.do(apiRequest(http.MethodPost, "/api/v1/dispatch/pause", tt.token, ""))
		if got := decodeJSON(t, w)["error"]; w.Code != 401 || got != tt.want {
			t.Errorf("%s: %d %q, want 401 %q", tt.name, w.Code, got, tt.want)
		}
	}
	w := f.do(hook("push", "d-broken", pushBody("decap-ci", "broken", "refs/heads/main")))
	if got := decodeJSON(t, w)["ignored"]; w.Code != 202 || got != "project decap-ci/broken is not buildable: project.json: managedRefRegex does not compile: error parsing regexp: missing closing ): `(unclosed`" {
		t.Errorf("push of an unbuildable project: %d, ignored %q", w.Code, got)
	}
}
