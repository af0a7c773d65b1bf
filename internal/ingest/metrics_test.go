package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
)

// The names here are prefixed so as not to collide with the package's
// other tests.

const metricsSecret = "metrics-test-secret"

// metricsPublisher publishes to a fake queue unless told to fail.
type metricsPublisher struct {
	q    *buildtest.FakeQueue
	fail atomic.Bool
}

func (p *metricsPublisher) Publish(ctx context.Context, reqs ...build.Request) error {
	if p.fail.Load() {
		return errors.New("queue unreachable")
	}
	return p.q.Publish(ctx, reqs...)
}

type metricsServer struct {
	srv   *ingest.Server
	reg   *prometheus.Registry
	pub   *metricsPublisher
	ready atomic.Bool
	logs  metricsLog
	clock *buildtest.Clock
}

// metricsLog collects JSON log lines.
type metricsLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *metricsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines whose msg is msg, decoded.
func (l *metricsLog) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

func newMetricsServer(t *testing.T) *metricsServer {
	t.Helper()
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	queue := buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
	m := &metricsServer{reg: metrics.NewRegistry(), pub: &metricsPublisher{q: queue}, clock: clock}
	m.ready.Store(true)
	m.srv = ingest.New(ingest.Config{WebhookSecret: []byte(metricsSecret), APIToken: "metrics-token"}, ingest.Deps{
		Publisher: m.pub, Idempotency: buildtest.NewIdempotency(clock.Now), Records: buildtest.NewRecords(),
		Catalog: buildtest.NewCatalog("c0ffee", map[string]string{
			"Codertocat/Hello-World": `{"buildImage":"debian:bookworm-slim","managedRefRegex":"master|main"}`,
		}),
		Blobs: buildtest.NewBlobs(), Queue: queue,
		Ready: []ingest.Check{{Name: "database", Check: func(context.Context) error {
			if !m.ready.Load() {
				return errors.New("database is locked")
			}
			return nil
		}}},
		Observer: metrics.NewIngest(m.reg), Metrics: metrics.Handler(m.reg),
		Logger: slog.New(slog.NewJSONHandler(&m.logs, nil)), Now: clock.Now,
	})
	return m
}

func (m *metricsServer) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	m.srv.ServeHTTP(w, r)
	return w
}

func metricsPush(ref string, deleted bool) []byte {
	after := "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
	if deleted {
		after = "0000000000000000000000000000000000000000"
	}
	return []byte(`{"ref":"refs/heads/` + ref + `","after":"` + after + `","deleted":` + map[bool]string{true: "true", false: "false"}[deleted] +
		`,"repository":{"name":"Hello-World","owner":{"login":"Codertocat"}},"pusher":{"name":"Codertocat"}}`)
}

// metricsHook builds a webhook request, signed with sig ("" = sign it right).
func metricsHook(event, delivery string, body []byte, sig string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if event != "" {
		r.Header.Set("X-GitHub-Event", event)
	}
	r.Header.Set("X-GitHub-Delivery", delivery)
	if sig == "" {
		sig = ingest.Sign([]byte(metricsSecret), body)
	}
	r.Header.Set("X-Hub-Signature-256", sig)
	return r
}

// scrape answers GET /metrics through the server's own router.
func (m *metricsServer) scrape(t *testing.T) string {
	t.Helper()
	w := m.do(httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", w.Code, w.Body)
	}
	b, _ := io.ReadAll(w.Body)
	return string(b)
}

func TestMetricsCountWebhooks(t *testing.T) {
	t.Parallel()
	m := newMetricsServer(t)
	steps := []struct {
		name     string
		req      *http.Request
		wantCode int
	}{
		{"signed push", metricsHook("push", "d-1", metricsPush("main", false), ""), http.StatusAccepted},
		{"redelivery", metricsHook("push", "d-1", metricsPush("main", false), ""), http.StatusAccepted},
		{"another push", metricsHook("push", "d-2", metricsPush("master", false), ""), http.StatusAccepted},
		{"unmanaged ref", metricsHook("push", "d-3", metricsPush("feature/x", false), ""), http.StatusAccepted},
		{"deletion", metricsHook("push", "d-4", metricsPush("main", true), ""), http.StatusAccepted},
		{"ping", metricsHook("ping", "d-5", []byte(`{}`), ""), http.StatusOK},
		{"other event", metricsHook("issues", "d-6", []byte(`{}`), ""), http.StatusAccepted},
		{"hostile event name", metricsHook("x-"+strings.Repeat("a", 40), "d-7", []byte(`{}`), ""), http.StatusAccepted},
		{"bad signature", metricsHook("push", "d-8", metricsPush("main", false), "sha256=00"), http.StatusUnauthorized},
		{"no event header", metricsHook("", "d-9", []byte(`{}`), ""), http.StatusBadRequest},
		{"malformed payload", metricsHook("push", "d-10", []byte(`{"ref":`), ""), http.StatusBadRequest},
	}
	for _, s := range steps {
		if w := m.do(s.req); w.Code != s.wantCode {
			t.Fatalf("%s: %d %s, want %d", s.name, w.Code, w.Body, s.wantCode)
		}
	}
	m.pub.fail.Store(true)
	// A new push of main (another commit): the same body again would be a
	// replay of d-1, answered without publishing.
	newCommit := bytes.Replace(metricsPush("main", false), []byte("6113728f"), []byte("7224839f"), 1)
	if w := m.do(metricsHook("push", "d-11", newCommit, "")); w.Code != http.StatusInternalServerError {
		t.Fatalf("push with the queue down: %d %s, want 500", w.Code, w.Body)
	}

	want := []struct {
		event, outcome string
		n              float64
	}{
		{"push", "queued", 2},
		{"push", "duplicate", 1},
		{"push", "ignored", 2},
		{"push", "unauthorized", 1},
		{"push", "invalid", 1},
		{"push", "error", 1},
		{"ping", "ignored", 1},
		{"other", "ignored", 2},
		{"none", "invalid", 1},
	}
	for _, w := range want {
		if got := metricstest.Value(t, m.reg, "decap_webhooks_total", "event", w.event, "outcome", w.outcome); got != w.n {
			t.Errorf("decap_webhooks_total{event=%q,outcome=%q} = %v, want %v", w.event, w.outcome, got, w.n)
		}
	}
	if got := metricstest.Value(t, m.reg, "decap_build_requests_queued_total", "trigger", "push"); got != 2 {
		t.Errorf("decap_build_requests_queued_total{trigger=push} = %v, want 2 (a redelivery queues nothing new)", got)
	}
	// Every publish is timed: two new builds, the redelivery's republish
	// and the failed one.
	if got := metricstest.Value(t, m.reg, "decap_publish_seconds"); got != 4 {
		t.Errorf("decap_publish_seconds count = %v, want 4", got)
	}
	if got := metricstest.Value(t, m.reg, "decap_api_requests_total", "method", "POST", "route", "/hooks/github", "code", "202"); got != 7 {
		t.Errorf("decap_api_requests_total{POST /hooks/github 202} = %v, want 7", got)
	}
	if got := metricstest.Value(t, m.reg, "decap_api_requests_total", "method", "POST", "route", "/hooks/github", "code", "401"); got != 1 {
		t.Errorf("decap_api_requests_total{POST /hooks/github 401} = %v, want 1", got)
	}

	// The scraped text says the same, and leaks no ref, delivery or
	// hostile header into a label.
	text := m.scrape(t)
	if !strings.Contains(text, `decap_webhooks_total{event="push",outcome="queued"} 2`) {
		t.Errorf("/metrics lacks the queued pushes:\n%s", metricsGrep(text, "decap_webhooks_total"))
	}
	for _, leak := range []string{"feature/x", "master", "d-1", "x-aaaa", "Hello-World"} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics contains %q, which must never be a label value", leak)
		}
	}

	// The log lines about those builds carry build ID, lock key and
	// delivery ID.
	for _, msg := range []string{"build queued", "redelivery answered with the delivery's first build"} {
		lines := m.logs.lines(t, msg)
		if len(lines) == 0 {
			t.Errorf("no %q log line", msg)
		}
		for _, l := range lines {
			for _, key := range []string{"build_id", "lock_key", "delivery_id"} {
				if v, _ := l[key].(string); v == "" {
					t.Errorf("%q log line lacks %s: %v", msg, key, l)
				}
			}
		}
	}
}

func TestMetricsCountRequestsByRoute(t *testing.T) {
	t.Parallel()
	m := newMetricsServer(t)
	newBuild := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/projects/Codertocat/Hello-World/builds", strings.NewReader(`{"ref":"main"}`))
		r.Header.Set("Authorization", "Bearer metrics-token")
		return r
	}
	read := func(path string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer metrics-token")
		return r
	}
	steps := []struct {
		req      *http.Request
		wantCode int
	}{
		{newBuild(), http.StatusAccepted},
		{newBuild(), http.StatusAccepted},
		{httptest.NewRequest(http.MethodPost, "/api/v1/projects/Codertocat/Hello-World/builds", strings.NewReader(`{"ref":"main"}`)), http.StatusUnauthorized},
		{read("/api/v1/builds/01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f"), http.StatusNotFound},
		{httptest.NewRequest(http.MethodGet, "/no/such/page", nil), http.StatusNotFound},
		{httptest.NewRequest("BREW", "/api/v1/teams", nil), http.StatusMethodNotAllowed},
	}
	for i, s := range steps {
		if w := m.do(s.req); w.Code != s.wantCode {
			t.Fatalf("step %d: %s %s = %d %s, want %d", i, s.req.Method, s.req.URL, w.Code, w.Body, s.wantCode)
		}
	}
	want := []struct {
		method, route, code string
		n                   float64
	}{
		{"POST", "/api/v1/projects/:team/:project/builds", "202", 2},
		{"POST", "/api/v1/projects/:team/:project/builds", "401", 1},
		{"GET", "/api/v1/builds/:id", "404", 1},
		{"GET", "unmatched", "404", 1},
		{"other", "/api/v1/teams", "405", 1},
	}
	for _, w := range want {
		if got := metricstest.Value(t, m.reg, "decap_api_requests_total", "method", w.method, "route", w.route, "code", w.code); got != w.n {
			t.Errorf("decap_api_requests_total{method=%q,route=%q,code=%q} = %v, want %v\n%s", w.method, w.route, w.code, got, w.n,
				metricsGrep(m.scrape(t), "decap_api_requests_total"))
		}
	}
	if got := metricstest.Value(t, m.reg, "decap_build_requests_queued_total", "trigger", "api"); got != 2 {
		t.Errorf("decap_build_requests_queued_total{trigger=api} = %v, want 2", got)
	}
	// The scrape itself is counted once it is answered.
	m.scrape(t)
	if got := metricstest.Value(t, m.reg, "decap_api_requests_total", "method", "GET", "route", "/metrics", "code", "200"); got != 1 {
		t.Errorf("decap_api_requests_total{GET /metrics 200} = %v, want 1", got)
	}
}

// Readiness is checked again 250 ms after the last check: it drops while
// the database fails and comes back by itself.
func TestMetricsReadyzRecovers(t *testing.T) {
	t.Parallel()
	m := newMetricsServer(t)
	for i, up := range []bool{true, false, true} {
		m.ready.Store(up)
		m.clock.Advance(250 * time.Millisecond)
		want := http.StatusOK
		if !up {
			want = http.StatusServiceUnavailable
		}
		if w := m.do(httptest.NewRequest(http.MethodGet, "/readyz", nil)); w.Code != want {
			t.Errorf("step %d (database up=%v): /readyz = %d %s, want %d", i, up, w.Code, w.Body, want)
		}
	}
	if got := metricstest.Value(t, m.reg, "decap_api_requests_total", "method", "GET", "route", "/readyz", "code", "503"); got != 1 {
		t.Errorf("decap_api_requests_total{GET /readyz 503} = %v, want 1", got)
	}
}

// metricsGrep returns the lines of text that contain s.
func metricsGrep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRequestLogShowsTheStatusSent(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	srv := ingest.New(ingest.Config{}, ingest.Deps{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/hooks/github", strings.NewReader("{}")))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", w.Code)
	}
	if !strings.Contains(logs.String(), "status=401") {
		t.Errorf("request log does not show the 401 that was sent:\n%s", logs.String())
	}
}
