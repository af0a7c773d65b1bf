package reap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
	"github.com/decap-ci/decap/internal/reap"
)

// observed makes f's reaper report to fresh metrics and returns their
// registry.
func observed(f *fixture) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	f.reaper = f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Observer = metrics.NewReap(reg) })
	return reg
}

func TestMetricsFinishedBuild(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := separately(separate)
		reg := observed(f)
		rec := f.running(t, "main")
		// It ran 42 s; the reaper hears of it 3 s after it ended.
		end := t0.Add(42 * time.Second)
		f.clock.Advance(45 * time.Second)
		o := outcome(rec, build.StatusFailed, 3, end)
		for range 2 { // a repeated report writes nothing and counts nothing
			if err := f.reaper.Handle(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if got := metricstest.Value(t, reg, "decap_builds_finished_total", "status", "failed"); got != 1 {
			t.Errorf("decap_builds_finished_total{status=failed} = %v, want 1", got)
		}
		if got := metricstest.Value(t, reg, "decap_builds_finished_total", "status", "succeeded"); got != 0 {
			t.Errorf("decap_builds_finished_total{status=succeeded} = %v, want 0", got)
		}
		if got, sum := metricstest.Value(t, reg, "decap_build_duration_seconds", "status", "failed"),
			metricstest.Sum(t, reg, "decap_build_duration_seconds", "status", "failed"); got != 1 || math.Abs(sum-42) > 1e-9 {
			t.Errorf("decap_build_duration_seconds{status=failed}: %v observations summing to %v, want 1 of 42", got, sum)
		}
		if got, sum := metricstest.Value(t, reg, "decap_reaper_lag_seconds"), metricstest.Sum(t, reg, "decap_reaper_lag_seconds"); got != 1 || math.Abs(sum-3) > 1e-9 {
			t.Errorf("decap_reaper_lag_seconds: %v observations summing to %v, want 1 of 3", got, sum)
		}
	})
}

// A build found gone by reconciliation ends now: no end time from an
// executor, so no lag to observe, but it is counted.
func TestMetricsReconciledBuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	reg := observed(f)
	rec := f.running(t, "main")
	f.exec.Vanish(rec.BuildID)
	f.clock.Advance(time.Minute)
	if err := f.reaper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Value(t, reg, "decap_builds_finished_total", "status", "errored"); got != 1 {
		t.Errorf("decap_builds_finished_total{status=errored} = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "decap_reaper_lag_seconds"); got != 1 {
		t.Errorf("decap_reaper_lag_seconds count = %v, want 1 (reconciliation sets the end when it finds the build gone)", got)
	}
}

func TestMetricsReaperErrors(t *testing.T) {
	t.Parallel()
	buildtest.BothWays(t, func(t *testing.T, separate bool) {
		ctx := context.Background()
		f := separately(separate)
		reg := observed(f)
		rec := f.running(t, "main")
		f.exec.FailRemove(errors.New("api server unreachable"))
		o := outcome(rec, build.StatusSucceeded, 0, t0.Add(time.Second))
		if err := f.reaper.Handle(ctx, o); err == nil {
			t.Fatal("Handle with a failing Remove: no error")
		}
		if got := metricstest.Value(t, reg, "decap_reaper_errors_total", "step", "remove"); got != 1 {
			t.Errorf("decap_reaper_errors_total{step=remove} = %v, want 1", got)
		}
		// The record was written before the removal failed: the build counts
		// once, and not again when the report is retried.
		f.exec.FailRemove(nil)
		if err := f.reaper.Handle(ctx, o); err != nil {
			t.Fatal(err)
		}
		if got := metricstest.Value(t, reg, "decap_builds_finished_total", "status", "succeeded"); got != 1 {
			t.Errorf("decap_builds_finished_total{status=succeeded} = %v, want 1", got)
		}
		if got := metricstest.Value(t, reg, "decap_reaper_errors_total", "step", "remove"); got != 1 {
			t.Errorf("decap_reaper_errors_total{step=remove} after the retry = %v, want still 1", got)
		}
	})
}

// The reaper's lines about a build carry its build ID, lock key and, as its
// record knows it, its delivery ID.
func TestLogLinesCarryBuildKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	var buf bytes.Buffer
	r := f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	rec := f.running(t, "main")
	rec.DeliveryID = "delivery-42"
	if err := f.records.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := r.Handle(ctx, outcome(rec, build.StatusSucceeded, 0, t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	want := map[string]string{"msg": "build ended", "build_id": string(rec.BuildID), "lock_key": "decap-ci/hello/main", "delivery_id": "delivery-42"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log line %s = %v, want %q (line %s)", k, line[k], v, buf.String())
		}
	}
}
