package services_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
	"github.com/decap-ci/decap/internal/services"
)

// heard keeps the port calls and the decisions it hears.
type heard struct {
	mu        sync.Mutex
	calls     []string
	decisions []dispatch.Decision
}

func (h *heard) Called(port, op string) {
	h.mu.Lock()
	h.calls = append(h.calls, port+"."+op)
	h.mu.Unlock()
}

func (h *heard) Decided(d dispatch.Decision) {
	h.mu.Lock()
	h.decisions = append(h.decisions, d)
	h.mu.Unlock()
}

func (h *heard) Paused(bool) {}

func (h *heard) called(op string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.calls, op)
}

func (h *heard) launched() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, d := range h.decisions {
		if d.Action == dispatch.Launched {
			n++
		}
	}
	return n
}

// open opens the embedded backend on a fresh data directory, with the
// example build scripts, as the services' mains do.
func open(t *testing.T, h *heard, env map[string]string) *services.Base {
	t.Helper()
	vars := map[string]string{
		"DECAP_DATA_DIR":      t.TempDir(),
		"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts"),
		"DECAP_API_TOKEN":     "t0ken-for-tests-5c1e9a7f3b2d8e6a0c4f",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	b, err := services.Open(context.Background(), cfg, slog.New(slog.DiscardHandler), time.Now, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Set.Catalog.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually waits, boundedly, until ok holds.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSubstitutedExecutorRunsAsShipped: a dispatcher and a reaper
// assembled with a substitute executor (as the bench does) are wired as
// the services run: launches and removals go through the backend's
// counting wrappers, the caller's observer hears the decisions beside the
// metrics, and an infrastructure failure is retried (the reaper publishes
// the retry, the dispatcher allows DECAP_MAX_INFRA_RETRIES of them).
func TestSubstitutedExecutorRunsAsShipped(t *testing.T) {
	t.Parallel()
	h := &heard{}
	b := open(t, h, nil)
	ex := buildtest.NewExecutor(time.Now)
	d, err := services.NewDispatcher(b, services.DispatcherOptions{Executor: ex, Observers: []dispatch.Observer{h}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := services.NewReaper(b, services.ReaperOptions{Executor: ex})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	wg.Go(func() { r.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	now := time.Now().UTC()
	req := build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "decap-ci", Project: "hello",
		Ref: "main", RefType: build.Branch, Trigger: build.TriggerAPI, RequestedBy: "test", RequestedAt: now}
	if err := b.Set.Queue.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the request is launched", func() bool { return len(ex.Launched()) == 1 })
	first := ex.Launched()[0]
	if first != req.BuildID {
		t.Fatalf("launched %s, want %s", first, req.BuildID)
	}
	// Evicted: an infrastructure failure, which the reaper retries.
	ex.End(first, build.Outcome{Status: build.StatusErrored, Infra: build.InfraEvicted, Reason: "evicted"})
	eventually(t, "the retry is launched", func() bool { return len(ex.Launched()) == 2 })
	retry, err := b.Set.Records.Get(ctx, ex.Launched()[1])
	if err != nil {
		t.Fatal(err)
	}
	if retry.RetryOf != first || retry.Attempt != 2 {
		t.Errorf("second launch: retryOf %s, attempt %d; want a retry of %s, attempt 2", retry.RetryOf, retry.Attempt, first)
	}
	ex.Finish(retry.BuildID, build.StatusSucceeded, 0)
	eventually(t, "the retry's record is final", func() bool {
		rec, err := b.Set.Records.Get(ctx, retry.BuildID)
		return err == nil && rec.Status == build.StatusSucceeded
	})
	eventually(t, "the ended builds are removed", func() bool { return h.called("executor.remove") })
	for _, op := range []string{"executor.launch", "queue.receive", "records.save", "launches.claim", "launches.started", "ends.ended"} {
		if !h.called(op) {
			t.Errorf("no %s heard through the backend's wrappers", op)
		}
	}
	if n := h.launched(); n != 2 {
		t.Errorf("the caller's observer heard %d launches, want 2", n)
	}
	if got := metricstest.Value(t, b.Registry, "decap_dispatch_decisions_total", "outcome", "launched", "reason", "started"); got != 2 {
		t.Errorf("decap_dispatch_decisions_total{launched,started} = %v, want 2: the metrics hear the decisions too", got)
	}
}

// TestIngestServesTheAPIAndUI: the assembled ingest answers its API with
// the configured token and serves the status UI on the same routes.
func TestIngestServesTheAPIAndUI(t *testing.T) {
	t.Parallel()
	b := open(t, &heard{}, nil)
	srv, err := services.NewIngest(b)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, token string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := get("/api/v1/projects", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/projects without a token: %d, want 401", code)
	}
	if code := get("/api/v1/projects", "t0ken-for-tests-5c1e9a7f3b2d8e6a0c4f"); code != http.StatusOK {
		t.Errorf("GET /api/v1/projects with the token: %d, want 200", code)
	}
	if code := get("/ui/login", ""); code != http.StatusOK {
		t.Errorf("GET /ui/login: %d, want 200: the status UI's sign-in page", code)
	}
}
