package ingest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ingest"
)

// A build run by the local executor has no Pod: its answers name none
// (the record keeps "build-<id>", the name of its process directory).
func TestNoPodNameWithoutPods(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		noPods  bool
		wantPod bool
	}{
		{"kubernetes", false, true},
		{"local", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, func(c *ingest.Config) { c.NoPodNames = tc.noPods })
			now := f.clock.Now()
			rec := build.Record{BuildID: build.NewID(now), Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
				Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: now}
			if err := rec.Start(now, rec.BuildID.PodName(), "c0ffee"); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(context.Background(), rec); err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"/api/v1/builds/" + string(rec.BuildID), "/api/v1/builds?status=running", "/api/v1/projects/decap-ci/hello/builds"} {
				w := f.do(apiRequest(http.MethodGet, path, token, ""))
				if w.Code != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
				}
				if got := strings.Contains(w.Body.String(), `"podName":"build-`); got != tc.wantPod {
					t.Errorf("GET %s names a pod: %v, want %v:\n%s", path, got, tc.wantPod, w.Body)
				}
			}
		})
	}
}
