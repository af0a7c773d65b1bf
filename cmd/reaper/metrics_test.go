package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRunServesMetrics checks the wiring of the metrics: the reaper answers
// GET /metrics on its health port, with the Go and process collectors and
// its own metrics.
func TestRunServesMetrics(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr) }()
	var (
		code int
		text string
	)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + env["DECAP_REAPER_ADDR"] + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, text = resp.StatusCode, string(b)
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("reaper never answered; log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d, want 200", code)
	}
	for _, want := range []string{
		`decap_builds_finished_total{status="succeeded"} 0`,
		`decap_reaper_errors_total{step="record"} 0`,
		"decap_reaper_lag_seconds_count 0",
		"# TYPE decap_build_duration_seconds histogram",
		`decap_backend_errors_total{backend="executor",op="remove"} 0`,
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
