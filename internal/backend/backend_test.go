package backend_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/config"
)

func TestKubernetesExecutorNeedsTheAWSBackend(t *testing.T) {
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"DECAP_EXECUTOR": "kubernetes", "DECAP_DATA_DIR": t.TempDir(), "DECAP_BUILD_SCRIPTS": "https://github.com/example/build-scripts.git"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.Open(t.Context(), cfg, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.OpenExecutor(time.Now)
	if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), "DECAP_BACKEND=aws") {
		t.Fatalf("OpenExecutor: got %v, want ErrInvalid saying the kubernetes executor needs DECAP_BACKEND=aws", err)
	}
}

func TestCancelRequestsMarksOnlyRunningBuilds(t *testing.T) {
	records := buildtest.NewRecords()
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	c := backend.CancelRequests{Records: records, Now: func() time.Time { return now }}
	save := func(status build.Status) build.Record {
		r := build.Record{BuildID: build.NewID(now), Team: "t", Project: "p", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerPush, Status: status, QueuedAt: now}
		if status.Final() {
			r.FinishedAt = now
		}
		if err := records.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	running := save(build.StatusRunning)
	if err := c.Cancel(t.Context(), running.BuildID); err != nil {
		t.Fatalf("Cancel of a running build: %v", err)
	}
	got, err := records.Get(t.Context(), running.BuildID)
	if err != nil || !got.CancelRequestedAt.Equal(now) || got.Status != build.StatusRunning {
		t.Fatalf("record after Cancel: got %+v, %v; want still running with CancelRequestedAt %s", got, err, now)
	}
	if err := c.Cancel(t.Context(), running.BuildID); err != nil {
		t.Errorf("a second Cancel: %v, want nil", err)
	}
	for _, status := range []build.Status{build.StatusQueued, build.StatusSucceeded} {
		r := save(status)
		if err := c.Cancel(t.Context(), r.BuildID); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Cancel of a %s build: got %v, want ErrNotFound", status, err)
		}
	}
	if err := c.Cancel(t.Context(), build.NewID(now)); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of an unknown build: got %v, want ErrNotFound", err)
	}
}
