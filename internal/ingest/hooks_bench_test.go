package ingest_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

// BenchmarkGitHubHook runs a signed push webhook through the whole echo
// stack (middleware, verify, parse, catalog, claim, record, publish) on the
// in-memory fakes: the CPU and allocations of the webhook path without any
// I/O (docs/BENCHMARKS.md). Every request has a fresh delivery ID.
func BenchmarkGitHubHook(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "github-webhooks", "push-with-new-branch.json"))
	if err != nil {
		b.Fatal(err)
	}
	const secret = "It's a Secret to Everybody"
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	queue := buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
	records := buildtest.NewRecords()
	srv := ingest.New(ingest.Config{WebhookSecret: []byte(secret)}, ingest.Deps{
		Publisher: queue, Idempotency: buildtest.NewIdempotency(clock.Now), Records: records,
		Catalog: buildtest.NewCatalog("c0ffee", map[string]string{
			"Codertocat/Hello-World": `{"buildImage":"debian:bookworm-slim","managedRefRegex":"master|main"}`,
		}),
		Queue: queue, Waiting: records, Now: clock.Now,
	})
	sig := ingest.Sign([]byte(secret), body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-GitHub-Event", "push")
		r.Header.Set("X-GitHub-Delivery", "bench-"+strconv.Itoa(i))
		r.Header.Set("X-Hub-Signature-256", sig)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
