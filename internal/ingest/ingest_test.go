package ingest_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

const (
	secret = "It's a Secret to Everybody"
	token  = "api-token-for-tests"
	// sidecarSecret is a sidecar's env value in the fixture's catalog,
	// which no answer may show.
	sidecarSecret = "sidecar-password-never-shown"
)

type fixture struct {
	srv       *ingest.Server
	queue     *buildtest.FakeQueue
	idem      *buildtest.FakeIdempotency
	records   *buildtest.FakeRecords
	blobs     *buildtest.FakeBlobs
	catalog   *buildtest.Catalog
	clock     *buildtest.Clock
	locks     *buildtest.FakeLocks
	gate      *buildtest.FakeGate
	sessions  *buildtest.FakeSessions
	refs      *fakeRefs
	canceller *fakeCanceller
	logs      *syncBuffer
}

func newFixture(t *testing.T, mutate func(*ingest.Config)) *fixture {
	t.Helper()
	return newFixtureDeps(t, mutate, nil)
}

// newFixtureDeps is newFixture with a hook to change (for instance, remove)
// the server's collaborators.
func newFixtureDeps(t *testing.T, mutate func(*ingest.Config), deps func(*ingest.Deps)) *fixture {
	t.Helper()
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	f := &fixture{
		queue:   buildtest.NewQueue(clock.Now, buildtest.QueueOptions{}),
		idem:    buildtest.NewIdempotency(clock.Now),
		records: buildtest.NewRecords(),
		blobs:   buildtest.NewBlobs(),
		catalog: buildtest.NewCatalog("c0ffee", map[string]string{
			"Codertocat/Hello-World": `{"buildImage":"debian:bookworm-slim","repoManager":"github","managedRefRegex":"master|main",` +
				`"sidecars":[{"name":"db","image":"postgres:16","args":["-c","fsync=off"],"env":[{"name":"POSTGRES_PASSWORD","value":"` + sidecarSecret + `"},{"name":"POSTGRES_DB","value":"app"}]}]}`,
			"decap-ci/hello":  `{"buildImage":"debian:bookworm-slim"}`,
			"decap-ci/broken": `{"buildImage":"x","managedRefRegex":"(unclosed"}`,
		}),
		clock:     clock,
		locks:     buildtest.NewLocks(clock.Now),
		gate:      buildtest.NewGate(),
		sessions:  buildtest.NewSessions(clock.Now),
		refs:      &fakeRefs{repos: map[string]refsOf{}},
		canceller: &fakeCanceller{running: map[build.ID]bool{}},
		logs:      &syncBuffer{},
	}
	// httptest's requests name Host example.com: the fixture's public URL.
	cfg := ingest.Config{WebhookSecret: []byte(secret), APIToken: token, MaxBodyBytes: 64 << 10, PublicURL: "http://example.com"}
	if mutate != nil {
		mutate(&cfg)
	}
	d := ingest.Deps{
		Publisher: f.queue, Idempotency: f.idem, Catalog: f.catalog, Records: f.records, Blobs: f.blobs,
		Queue: f.queue, Waiting: f.records, Running: f.records, Locks: f.locks, Gate: f.gate, Canceller: f.canceller, Refs: f.refs,
		Sessions: f.sessions,
		Logger:   slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      clock.Now,
	}
	if deps != nil {
		deps(&d)
	}
	f.srv = ingest.New(cfg, d)
	return f
}

func payload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "github-webhooks", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hook builds a signed webhook request.
func hook(event, delivery string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	r.Header.Set("X-Hub-Signature-256", ingest.Sign([]byte(secret), body))
	return r
}

func (f *fixture) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	return w
}

// queued returns the requests on the queue, in order.
func (f *fixture) queued(t *testing.T) []build.Request {
	t.Helper()
	msgs, err := f.queue.Receive(context.Background(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []build.Request
	for _, m := range msgs {
		r, err := build.Decode(m.Body)
		if err != nil {
			t.Fatalf("queued body does not decode: %v", err)
		}
		reqs = append(reqs, r)
	}
	return reqs
}

func decodeJSON(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", w.Body.String(), err)
	}
	return m
}

func TestGitHubPayloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, event string
		wantStatus  int
		wantIgnored string // substring of "ignored"; "" = builds
	}{
		{"push-with-new-branch.json", "push", 202, ""},
		{"push-with-no-username-committer.json", "push", 202, ""},
		{"push.json", "push", 202, "was deleted"},
		{"push-with-organization.json", "push", 202, "was deleted"},
		{"ping.json", "ping", 200, ""},
		{"create.json", "create", 202, `event "create"`},
		{"delete.json", "delete", 202, `event "delete"`},
		{"pull_request-opened.json", "pull_request", 202, `does not build pull requests`},
		{"pull_request-closed.json", "pull_request", 202, `does not build pull requests`},
		{"pull_request-synchronize.json", "pull_request", 202, `does not build pull requests`},
		{"issue_comment-created.json", "issue_comment", 202, `#1 is an issue, not a pull request`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w := f.do(hook(tt.event, "delivery-"+tt.file, payload(t, tt.file)))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			body := decodeJSON(t, w)
			reqs := f.queued(t)
			if tt.event != "push" || tt.wantIgnored != "" {
				if len(reqs) != 0 {
					t.Errorf("queued %d requests, want none", len(reqs))
				}
				if tt.wantIgnored != "" && !strings.Contains(body["ignored"].(string), tt.wantIgnored) {
					t.Errorf("ignored = %q, want it to contain %q", body["ignored"], tt.wantIgnored)
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("queued %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			want := build.Request{
				V: 1, BuildID: got.BuildID, Team: "Codertocat", Project: "Hello-World", Ref: "master",
				RefType: build.Branch, SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", Trigger: build.TriggerPush,
				RequestedBy: "Codertocat", RequestedAt: f.clock.Now(), DeliveryID: "delivery-" + tt.file,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("queued request (-want +got):\n%s", diff)
			}
			builds := body["builds"].([]any)
			if len(builds) != 1 || builds[0].(map[string]any)["id"] != string(got.BuildID) ||
				builds[0].(map[string]any)["lockKey"] != "Codertocat/Hello-World/master" {
				t.Errorf("answer builds = %v, want the queued build %s", builds, got.BuildID)
			}
		})
	}
}

// pushBody is a minimal push payload.
func pushBody(owner, repo, ref string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": ref, "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "deleted": false,
		"repository": map[string]any{"name": repo, "owner": map[string]any{"login": owner}},
		"pusher":     map[string]any{"name": "someone"},
	})
	return b
}

func TestWebhookRejections(t *testing.T) {
	t.Parallel()
	good := pushBody("decap-ci", "hello", "refs/heads/main")
	tests := []struct {
		name       string
		cfg        func(*ingest.Config)
		req        func() *http.Request
		wantStatus int
		wantError  string
	}{
		{"missing signature", nil, func() *http.Request {
			r := hook("push", "d1", good)
			r.Header.Del("X-Hub-Signature-256")
			return r
		}, 401, "missing"},
		{"wrong secret", nil, func() *http.Request {
			r := hook("push", "d1", good)
			r.Header.Set("X-Hub-Signature-256", ingest.Sign([]byte("guess"), good))
			return r
		}, 401, "does not match"},
		{"sha1 signature", nil, func() *http.Request {
			r := hook("push", "d1", good)
			r.Header.Set("X-Hub-Signature-256", "sha1=abcdef")
			return r
		}, 401, "sha256="},
		{"body changed after signing", nil, func() *http.Request {
			r := hook("push", "d1", good)
			r.Body = io.NopCloser(bytes.NewReader(pushBody("decap-ci", "hello", "refs/heads/evil")))
			return r
		}, 401, "does not match"},
		{"no secret configured", func(c *ingest.Config) { c.WebhookSecret = nil }, func() *http.Request { return hook("push", "d1", good) }, 401, "no webhook secret"},
		{"oversized declared", nil, func() *http.Request { return hook("push", "d1", bytes.Repeat([]byte(" "), 65<<10)) }, 413, "larger than"},
		{"oversized chunked", nil, func() *http.Request {
			r := hook("push", "d1", bytes.Repeat([]byte(" "), 65<<10))
			r.ContentLength = -1
			return r
		}, 413, "larger than"},
		{"malformed json", nil, func() *http.Request { return hook("push", "d1", []byte(`{"ref":`)) }, 400, "push payload"},
		{"json array", nil, func() *http.Request { return hook("push", "d1", []byte(`[1]`)) }, 400, "push payload"},
		{"form encoded", nil, func() *http.Request {
			r := hook("push", "d1", []byte("payload=%7B%7D"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, 415, "application/json"},
		{"missing event", nil, func() *http.Request {
			r := hook("push", "d1", good)
			r.Header.Del("X-GitHub-Event")
			return r
		}, 400, "X-GitHub-Event"},
		{"missing delivery", nil, func() *http.Request { return hook("push", "", good) }, 400, "X-GitHub-Delivery"},
		{"path traversal owner", nil, func() *http.Request { return hook("push", "d1", pushBody("..", "hello", "refs/heads/main")) }, 400, "repository owner"},
		{"slash in repository", nil, func() *http.Request { return hook("push", "d1", pushBody("decap-ci", "../../etc", "refs/heads/main")) }, 400, "repository name"},
		{"space in repository", nil, func() *http.Request {
			return hook("push", "d1", pushBody("decap-ci", "hello world", "refs/heads/main"))
		}, 400, "repository name"},
		{"ref with dotdot", nil, func() *http.Request { return hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/a/../b")) }, 400, "ref"},
		{"very long ref", nil, func() *http.Request {
			return hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/"+strings.Repeat("x", 400)))
		}, 400, "longer than"},
		{"no ref", nil, func() *http.Request { return hook("push", "d1", pushBody("decap-ci", "hello", "")) }, 400, "no ref"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			w := f.do(tt.req())
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			if got := decodeJSON(t, w)["error"]; !strings.Contains(got.(string), tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if n := len(f.queued(t)); n != 0 {
				t.Errorf("queued %d requests, want none", n)
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Errorf("answer leaks the webhook secret")
			}
		})
	}
}

func TestWebhookIgnored(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, owner, repo, ref, want string
	}{
		{"unknown project", "nobody", "nothing", "refs/heads/main", "not in the build-scripts repository"},
		{"invalid project.json", "decap-ci", "broken", "refs/heads/main", "not buildable"},
		{"unmanaged ref", "Codertocat", "Hello-World", "refs/heads/master-old", "does not match managedRefRegex"},
		{"neither branch nor tag", "decap-ci", "hello", "refs/pull/1/head", "neither a branch nor a tag"},
		{"branch named like a full ref", "decap-ci", "hello", "refs/heads/refs/heads/main", "starts with refs/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w := f.do(hook("push", "d-"+strings.ReplaceAll(tt.name, " ", "-"), pushBody(tt.owner, tt.repo, tt.ref)))
			if w.Code != http.StatusAccepted {
				t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
			}
			if got := decodeJSON(t, w)["ignored"]; !strings.Contains(got.(string), tt.want) {
				t.Errorf("ignored = %q, want it to contain %q", got, tt.want)
			}
			if n := len(f.queued(t)); n != 0 {
				t.Errorf("queued %d requests, want none", n)
			}
		})
	}
}

func TestWebhookTagAndCase(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if w := f.do(hook("push", "d-tag", pushBody("decap-ci", "hello", "refs/tags/v1.0"))); w.Code != 202 {
		t.Fatalf("tag push: status %d (%s)", w.Code, w.Body)
	}
	if w := f.do(hook("push", "d-case", pushBody("decap-ci", "hello", "refs/heads/Feature/CamelCase"))); w.Code != 202 {
		t.Fatalf("branch push: status %d (%s)", w.Code, w.Body)
	}
	reqs := f.queued(t)
	if len(reqs) != 2 {
		t.Fatalf("queued %d, want 2", len(reqs))
	}
	got := map[string]build.RefType{}
	for _, r := range reqs {
		got[r.Ref] = r.RefType
	}
	if diff := cmp.Diff(map[string]build.RefType{"v1.0": build.Tag, "Feature/CamelCase": build.Branch}, got); diff != "" {
		t.Errorf("refs (-want +got):\n%s", diff)
	}
}

func TestDuplicateDeliveryQueuedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	body := payload(t, "push-with-new-branch.json")
	var ids []any
	for i := range 3 {
		// The last redelivery comes days later, past the queue's dedup window.
		if i == 2 {
			f.clock.Advance(72 * time.Hour)
		}
		w := f.do(hook("push", "same-delivery", body))
		if w.Code != 202 {
			t.Fatalf("status %d (%s)", w.Code, w.Body)
		}
		ids = append(ids, decodeJSON(t, w)["builds"].([]any)[0].(map[string]any)["id"])
	}
	// Every answer names the delivery's one build, which has a record.
	if ids[0] != ids[1] || ids[0] != ids[2] {
		t.Errorf("answered ids %v, want the first build's id every time", ids)
	}
	rec, err := f.records.Get(context.Background(), build.ID(ids[0].(string)))
	if err != nil || rec.Status != build.StatusQueued || rec.DeliveryID != "same-delivery" {
		t.Errorf("record = %+v, %v; want a queued record of the delivery", rec, err)
	}
	// The queue got it once within its dedup window, and again (same build
	// ID, which the dispatcher builds once) after it.
	reqs := f.queued(t)
	if len(reqs) != 1 || string(reqs[0].BuildID) != ids[0] {
		t.Errorf("received %+v, want the head: one request of build %v", reqs, ids[0])
	}
	if st, _ := f.queue.Stats(context.Background()); st.Visible+st.InFlight != 2 {
		t.Errorf("queue holds %+v, want 2 messages (the second after the dedup window)", st)
	}
}

// A signed push body sent again under new X-GitHub-Delivery IDs is a
// replay, not a new push: it is answered with the first build and queues
// nothing; another push of the branch (another after) builds.
func TestReplayedPushBuildsOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	body := payload(t, "push-with-new-branch.json")
	var ids []any
	for _, delivery := range []string{"first", "replay-1", "replay-2"} {
		w := f.do(hook("push", delivery, body))
		if w.Code != http.StatusAccepted {
			t.Fatalf("delivery %s: status %d (%s), want 202", delivery, w.Code, w.Body)
		}
		ids = append(ids, decodeJSON(t, w)["builds"].([]any)[0].(map[string]any)["id"])
	}
	if ids[0] != ids[1] || ids[0] != ids[2] {
		t.Errorf("answered ids %v, want the first build's id every time", ids)
	}
	if st, _ := f.queue.Stats(context.Background()); st.Visible+st.InFlight != 1 {
		t.Errorf("queue holds %+v, want the first push's one message", st)
	}
	rec, err := f.records.Get(context.Background(), build.ID(ids[0].(string)))
	if err != nil || rec.DeliveryID != "first" {
		t.Errorf("record = %+v, %v; want the first delivery's", rec, err)
	}
	// The same branch pushed again (another after commit) is a new push.
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	ev["before"], ev["after"] = ev["after"], "0123456789abcdef0123456789abcdef01234567"
	next, _ := json.Marshal(ev)
	w := f.do(hook("push", "second-push", next))
	if w.Code != http.StatusAccepted {
		t.Fatalf("second push: status %d (%s), want 202", w.Code, w.Body)
	}
	if id := decodeJSON(t, w)["builds"].([]any)[0].(map[string]any)["id"]; id == ids[0] {
		t.Errorf("second push answered with the first push's build %v, want a new build", id)
	}
}

func TestQueuedRecordVisibleAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	w := f.do(apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":"main"}`))
	if w.Code != 202 {
		t.Fatalf("status %d (%s)", w.Code, w.Body)
	}
	id := decodeJSON(t, w)["id"].(string)
	w = f.do(get("/api/v1/builds/" + id))
	if w.Code != 200 || decodeJSON(t, w)["status"] != "queued" {
		t.Errorf("GET the accepted build before any dispatcher ran: %d %s, want 200 queued", w.Code, w.Body)
	}
}

func TestInsecureSkipSignature(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *ingest.Config) { c.WebhookSecret = nil; c.InsecureSkipSignature = true })
	r := hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
	r.Header.Del("X-Hub-Signature-256")
	if w := f.do(r); w.Code != 202 {
		t.Fatalf("status %d (%s), want 202", w.Code, w.Body)
	}
}

func apiRequest(method, path, tok, body string) *http.Request {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

func TestRequestBuild(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, token, body string
		wantStatus              int
		wantError               string
	}{
		{"ok", "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":"feature/x","sha":"abc1234"}`, 202, ""},
		{"tag", "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":"v2","refType":"tag"}`, 202, ""},
		{"unmanaged ref is fine by hand", "/api/v1/projects/Codertocat/Hello-World/builds", token, `{"ref":"experiment"}`, 202, ""},
		{"no token", "/api/v1/projects/decap-ci/hello/builds", "", `{"ref":"main"}`, 401, "API token"},
		{"wrong token", "/api/v1/projects/decap-ci/hello/builds", "nope", `{"ref":"main"}`, 401, "API token"},
		{"unknown project", "/api/v1/projects/decap-ci/nothing/builds", token, `{"ref":"main"}`, 404, "not in the build-scripts repository"},
		{"invalid project", "/api/v1/projects/decap-ci/broken/builds", token, `{"ref":"main"}`, 422, "not buildable"},
		{"bad ref", "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":"a b"}`, 400, "ref"},
		{"empty ref", "/api/v1/projects/decap-ci/hello/builds", token, `{}`, 400, "ref is empty"},
		{"bad json", "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":`, 400, "must be JSON"},
		{"unknown field", "/api/v1/projects/decap-ci/hello/builds", token, `{"branch":"main"}`, 400, "unknown field"},
		{"hostile team", "/api/v1/projects/..%2F..%2Fetc/hello/builds", token, `{"ref":"main"}`, 400, "team"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w := f.do(apiRequest(http.MethodPost, tt.path, tt.token, tt.body))
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.wantStatus)
			}
			body := decodeJSON(t, w)
			reqs := f.queued(t)
			if tt.wantError != "" {
				if got, _ := body["error"].(string); !strings.Contains(got, tt.wantError) {
					t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
				}
				if len(reqs) != 0 {
					t.Errorf("queued %d, want none", len(reqs))
				}
				return
			}
			if len(reqs) != 1 || string(reqs[0].BuildID) != body["id"] || reqs[0].Trigger != build.TriggerAPI {
				t.Fatalf("queued %+v, answer %v: want one api request with the answered id", reqs, body)
			}
		})
	}
}

// One branch has one lock key whatever the entry point: a build of
// "refs/heads/main" by hand runs under the same lock key as a push of main,
// never beside it (invariant 3).
func TestOneLockKeyPerRef(t *testing.T) {
	t.Parallel()
	const path = "/api/v1/projects/decap-ci/hello/builds"
	tests := []struct {
		name        string
		req         *http.Request
		wantLockKey string
		wantType    build.RefType
	}{
		{"push of a branch", hook("push", "d-branch", pushBody("decap-ci", "hello", "refs/heads/main")), "decap-ci/hello/main", build.Branch},
		{"api short name", apiRequest(http.MethodPost, path, token, `{"ref":"main"}`), "decap-ci/hello/main", build.Branch},
		{"api full branch ref", apiRequest(http.MethodPost, path, token, `{"ref":"refs/heads/main"}`), "decap-ci/hello/main", build.Branch},
		{"api full branch ref with its type", apiRequest(http.MethodPost, path, token, `{"ref":"refs/heads/main","refType":"branch"}`), "decap-ci/hello/main", build.Branch},
		{"push of a tag", hook("push", "d-tag", pushBody("decap-ci", "hello", "refs/tags/v1")), "decap-ci/hello/v1", build.Tag},
		{"api full tag ref", apiRequest(http.MethodPost, path, token, `{"ref":"refs/tags/v1"}`), "decap-ci/hello/v1", build.Tag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			if w := f.do(tt.req); w.Code != http.StatusAccepted {
				t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
			}
			reqs := f.queued(t)
			if len(reqs) != 1 {
				t.Fatalf("queued %d requests, want 1", len(reqs))
			}
			if got := reqs[0].LockKey(); got != tt.wantLockKey || reqs[0].RefType != tt.wantType {
				t.Errorf("queued lock key %q (%s), want %q (%s)", got, reqs[0].RefType, tt.wantLockKey, tt.wantType)
			}
		})
	}
	refused := []struct{ name, body, wantError string }{
		{"full tag ref called a branch", `{"ref":"refs/tags/v1","refType":"branch"}`, "refType"},
		{"pull request ref", `{"ref":"refs/pull/1/head"}`, "neither a branch"},
		{"other full ref", `{"ref":"refs/remotes/origin/main"}`, "neither a branch"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w := f.do(apiRequest(http.MethodPost, path, token, tt.body))
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status = %d (%s), want 400", w.Code, w.Body)
			}
			if got, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(got, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", got, tt.wantError)
			}
			if n := len(f.queued(t)); n != 0 {
				t.Errorf("queued %d requests, want none", n)
			}
		})
	}
}

func TestAuthDisabled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *ingest.Config) { c.APIToken = ""; c.AuthDisabled = true })
	if w := f.do(apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", "", `{"ref":"main"}`)); w.Code != 202 {
		t.Fatalf("status %d (%s), want 202", w.Code, w.Body)
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestReadAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	base := f.clock.Now()
	var ids []build.ID
	for i := range 3 {
		id := build.NewID(base.Add(time.Duration(i) * time.Second))
		ids = append(ids, id)
		exit := 0
		rec := build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerPush, Status: build.StatusSucceeded, ExitCode: &exit,
			QueuedAt: base.Add(time.Duration(i) * time.Second), StartedAt: base.Add(time.Duration(i) * time.Second),
			FinishedAt: base.Add(time.Duration(i)*time.Second + 10*time.Second),
			LogKey:     build.LogKey(id), ArtifactsKey: build.ArtifactsKey(id)}
		if err := f.records.Save(ctx, rec); err != nil {
			t.Fatal(err)
		}
		f.blobs.Put(ctx, build.LogKey(id), bytes.NewReader(gz(t, "hello from build "+string(id)+"\n")))
		f.blobs.Put(ctx, build.ArtifactsKey(id), bytes.NewReader([]byte("tarball")))
	}
	f.records.Save(ctx, build.Record{BuildID: build.NewID(base), Team: "other-team", Project: "x", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: base})

	t.Run("teams", func(t *testing.T) {
		w := f.do(get("/api/v1/teams"))
		got := decodeJSON(t, w)["teams"]
		if diff := cmp.Diff([]any{"Codertocat", "decap-ci", "other-team"}, got); diff != "" {
			t.Errorf("teams (-want +got):\n%s", diff)
		}
	})
	t.Run("projects with errors", func(t *testing.T) {
		w := f.do(get("/api/v1/projects"))
		ps := decodeJSON(t, w)["projects"].([]any)
		if len(ps) != 3 {
			t.Fatalf("got %d projects, want 3", len(ps))
		}
		broken := ps[1].(map[string]any)
		if broken["project"] != "broken" || !strings.Contains(broken["error"].(string), "does not compile") {
			t.Errorf("broken project = %v, want its error", broken)
		}
	})
	t.Run("history newest first, paged", func(t *testing.T) {
		w := f.do(get("/api/v1/projects/decap-ci/hello/builds?limit=2"))
		page := decodeJSON(t, w)
		bs := page["builds"].([]any)
		if len(bs) != 2 || bs[0].(map[string]any)["id"] != string(ids[2]) || bs[1].(map[string]any)["id"] != string(ids[1]) {
			t.Fatalf("first page = %v, want ids %s, %s", bs, ids[2], ids[1])
		}
		if page["averageDurationSeconds"] != 10.0 {
			t.Errorf("averageDurationSeconds = %v, want 10", page["averageDurationSeconds"])
		}
		w = f.do(get("/api/v1/projects/decap-ci/hello/builds?limit=2&cursor=" + page["nextCursor"].(string)))
		page = decodeJSON(t, w)
		if bs := page["builds"].([]any); len(bs) != 1 || bs[0].(map[string]any)["id"] != string(ids[0]) {
			t.Errorf("second page = %v, want %s", bs, ids[0])
		}
		if _, ok := page["nextCursor"]; ok {
			t.Errorf("last page has a nextCursor")
		}
	})
	t.Run("bad limit", func(t *testing.T) {
		w := f.do(get("/api/v1/projects/decap-ci/hello/builds?limit=0"))
		if w.Code != 400 {
			t.Errorf("status %d, want 400", w.Code)
		}
	})
	t.Run("one build", func(t *testing.T) {
		w := f.do(get("/api/v1/builds/" + string(ids[0])))
		if w.Code != 200 || decodeJSON(t, w)["status"] != "succeeded" {
			t.Errorf("status %d body %s", w.Code, w.Body)
		}
	})
	t.Run("unknown build", func(t *testing.T) {
		w := f.do(get("/api/v1/builds/" + string(build.NewID(base))))
		if w.Code != 404 {
			t.Errorf("status %d, want 404", w.Code)
		}
		decodeJSON(t, w)
	})
	t.Run("malformed id", func(t *testing.T) {
		w := f.do(get("/api/v1/builds/..%2F..%2Fetc"))
		if w.Code != 400 {
			t.Errorf("status %d, want 400", w.Code)
		}
	})
	t.Run("log", func(t *testing.T) {
		w := f.do(get("/api/v1/builds/" + string(ids[1]) + "/log"))
		if w.Code != 200 || w.Body.String() != "hello from build "+string(ids[1])+"\n" {
			t.Errorf("log: status %d body %q", w.Code, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("log Content-Type = %q", ct)
		}
	})
	t.Run("artifacts", func(t *testing.T) {
		w := f.do(get("/api/v1/builds/" + string(ids[1]) + "/artifacts"))
		if w.Code != 200 || w.Body.String() != "tarball" || w.Header().Get("Content-Type") != "application/gzip" {
			t.Errorf("artifacts: status %d type %q body %q", w.Code, w.Header().Get("Content-Type"), w.Body)
		}
	})
	t.Run("health", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if w := f.do(get(p)); w.Code != 200 {
				t.Errorf("%s: status %d", p, w.Code)
			}
		}
	})
}

func TestReadyzFails(t *testing.T) {
	t.Parallel()
	srv := ingest.New(ingest.Config{}, ingest.Deps{Ready: []ingest.Check{{Name: "database", Check: func(context.Context) error { return build.ErrUnavailable }}}})
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, get("/readyz"))
	if w.Code != 503 || !strings.Contains(w.Body.String(), "database") {
		t.Errorf("readyz: status %d body %s, want 503 naming the database", w.Code, w.Body)
	}
}

// /readyz is public and each of its checks calls a backend (the queue's
// counts, a record read, SQLite's write lock): a flood of probes shares
// one check (four a second at most), not a backend call per request.
func TestReadyzFloodSharesChecks(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	var calls atomic.Int64
	var down atomic.Bool
	srv := ingest.New(ingest.Config{}, ingest.Deps{Now: clock.Now, Ready: []ingest.Check{{Name: "database", Check: func(ctx context.Context) error {
		calls.Add(1)
		if err := ctx.Err(); err != nil {
			return err
		}
		if down.Load() {
			return build.ErrUnavailable
		}
		return nil
	}}}})
	probe := func() int {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, get("/readyz"))
		return w.Code
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if code := probe(); code != 200 {
				t.Errorf("readyz: %d, want 200", code)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("100 probes at once ran the check %d times, want once", n)
	}
	// A prober that hangs up does not fail the check it shares.
	clock.Advance(250 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, get("/readyz").WithContext(ctx))
	if code := probe(); code != 200 {
		t.Errorf("readyz after a prober hung up: %d, want 200", code)
	}
	// 250 ms later the next probe checks again, and sees the change.
	down.Store(true)
	clock.Advance(250 * time.Millisecond)
	if code := probe(); code != 503 || calls.Load() != 3 {
		t.Errorf("250 ms later: %d after %d checks, want 503 after 3", code, calls.Load())
	}
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	// The example from GitHub's "Validating webhook deliveries" page.
	sig := "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if err := ingest.VerifySignature([]byte(secret), []byte("Hello, World!"), sig); err != nil {
		t.Errorf("GitHub's documented example: %v", err)
	}
	if got := ingest.Sign([]byte(secret), []byte("Hello, World!")); got != sig {
		t.Errorf("Sign = %s, want %s", got, sig)
	}
}

// pipeFollower is a LogFollower whose followed log is a pipe the test
// writes to; OpenLiveLog is never the way for it.
type pipeFollower struct{ r *io.PipeReader }

func (p pipeFollower) OpenLiveLog(build.ID) (io.ReadCloser, error) {
	return nil, errors.New("a follower's log is followed, not opened")
}

func (p pipeFollower) FollowLiveLog(context.Context, build.ID) (io.ReadCloser, error) {
	return p.r, nil
}

// TestFollowLogStreamsAFollowedLogAsItIsWritten: on the kubernetes executor
// the live log is a stream that blocks until more is written; each chunk
// must reach the client at once, not when the build ends.
func TestFollowLogStreamsAFollowedLogAsItIsWritten(t *testing.T) {
	pr, pw := io.Pipe()
	f := newFixtureDeps(t, func(c *ingest.Config) { c.FollowPoll = 10 * time.Millisecond },
		func(d *ingest.Deps) { d.LiveLogs = pipeFollower{r: pr} })
	rec := build.Record{BuildID: build.NewID(f.clock.Now()), Team: "decap-ci", Project: "hello", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerPush, Status: build.StatusRunning, QueuedAt: f.clock.Now()}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.srv)
	defer srv.Close()
	// A bound, so that a chunk held back fails the test instead of hanging it.
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/builds/"+string(rec.BuildID)+"/log?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)

	go pw.Write([]byte("step 1\n"))
	line, err := br.ReadString('\n')
	if err != nil || line != "step 1\n" {
		t.Fatalf("first line while the build runs: got %q, %v", line, err)
	}
	go func() {
		pw.Write([]byte("step 2\n"))
		pw.Close()
		rec.Status, rec.FinishedAt = build.StatusSucceeded, f.clock.Now()
		f.records.Save(context.Background(), rec)
	}()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "step 2\n" {
		t.Fatalf("rest of the log: got %q, %v; want the second line, then the end", rest, err)
	}
}
