package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/sqlite"
)

// TestRunServesMetrics checks the wiring of the metrics: the dispatcher
// answers GET /metrics on its health port, with the Go and process
// collectors, its gauges, and the decision it made about a request.
func TestRunServesMetrics(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	env["DECAP_MAX_RUNNING_BUILDS"] = "7"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlite.Open(filepath.Join(env["DECAP_DATA_DIR"], "decap.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// An unknown project: the dispatcher drops it, launching nothing.
	req := build.Request{V: 1, BuildID: build.NewID(time.Now()), Team: "nobody", Project: "none", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: time.Now()}
	if err := sqlite.NewQueue(db, sqlite.QueueOptions{}).Publish(ctx, req); err != nil {
		t.Fatal(err)
	}

	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, stderr) }()
	var text string
	waitUntil(t, "/metrics to show the dropped request", stderr, func() bool {
		resp, err := http.Get("http://" + env["DECAP_DISPATCHER_ADDR"] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		text = string(b)
		return resp.StatusCode == http.StatusOK &&
			strings.Contains(text, `decap_dispatch_decisions_total{outcome="dropped",reason="unknown_project"} 1`)
	})
	for _, want := range []string{
		"decap_running_builds_cap 7",
		"decap_running_builds ",
		"decap_queue_visible_messages ",
		"decap_queue_inflight_messages ",
		"decap_queue_oldest_age_seconds ",
		"decap_dispatch_paused 0",
		"decap_lock_wait_seconds_count 0",
		`decap_backend_errors_total{backend="queue",op="receive"} 0`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}
