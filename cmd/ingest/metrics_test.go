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

	"github.com/decap-ci/decap/internal/ingest"
)

// TestRunServesMetrics checks the wiring of the metrics: ingest answers
// GET /metrics on its own router, with the Go and process collectors and
// decap_ metrics that count a webhook it was sent.
func TestRunServesMetrics(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	const secret = "metrics-secret-7d3b9f1a5e2c8d4b6a0f"
	env := map[string]string{
		"DECAP_DATA_DIR": t.TempDir(), "DECAP_ADDR": addr, "DECAP_GITHUB_WEBHOOK_SECRET": secret,
		"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr) }()
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("ingest never became ready; log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	body := []byte(`{"ref":"refs/heads/master","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",` +
		`"repository":{"name":"Hello-World","owner":{"login":"Codertocat"}},"pusher":{"name":"Codertocat"}}`)
	req, err := http.NewRequest(http.MethodPost, base+"/hooks/github", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "metrics-delivery-1")
	req.Header.Set("X-Hub-Signature-256", ingest.Sign([]byte(secret), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("signed push: %d %s, want 202", resp.StatusCode, b)
	}

	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{
		`decap_webhooks_total{event="push",outcome="queued"} 1`,
		`decap_build_requests_queued_total{trigger="push"} 1`,
		`decap_api_requests_total{code="202",method="POST",route="/hooks/github"} 1`,
		`decap_publish_seconds_count 1`,
		`decap_backend_errors_total{backend="queue",op="publish"} 0`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}
