package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
)

// observed returns a dispatcher on f that reports to fresh metrics, and
// their registry; idem, when set, replaces the fixture's idempotency.
func observed(f *fixture, gate dispatch.Gate, idem ...dispatch.Idempotency) (*dispatch.Dispatcher, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	var claims dispatch.Idempotency = f.idem
	if len(idem) > 0 {
		claims = idem[0]
	}
	cfg := f.cfg
	cfg.GateInterval = 20 * time.Millisecond
	now := time.Now
	if f.clock != nil {
		now = f.clock.Now
	}
	return dispatch.New(cfg, dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: claims,
		Records: f.records, Launcher: f.launcher, Gate: gate, Observer: metrics.NewDispatch(reg, cfg.Cap), Now: now,
	}), reg
}

// failingIdempotency fails every claim.
type failingIdempotency struct{}

func (failingIdempotency) Claim(context.Context, string, build.ID, time.Duration) (build.ID, error) {
	return "", errors.New("dynamodb: throttled")
}

// decisionCount sums decap_dispatch_decisions_total over every label.
func decisionCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, fam := range families {
		if fam.GetName() == "decap_dispatch_decisions_total" {
			for _, m := range fam.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func TestMetricsCountDecisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lease := func(f *fixture, key string) {
		l := build.Lease{Key: key, BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if err := f.locks.Acquire(ctx, l, 0); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name                string
		project, ref        string
		trigger             build.Trigger
		age                 time.Duration
		idem                dispatch.Idempotency // replaces the fixture's
		setup               func(f *fixture, req build.Request)
		wantOutcome, reason string
	}{
		{name: "launch", project: "decap-ci/hello", ref: "main", wantOutcome: "launched", reason: "started"},
		{name: "already running", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			rec := build.RecordFor(req)
			rec.Status = build.StatusRunning
			f.records.Save(ctx, rec)
		}, wantOutcome: "launched", reason: "already_running"},
		{name: "branch locked", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			lease(f, req.LockKey())
		}, wantOutcome: "deferred", reason: "locked"},
		{name: "cap reached", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			lease(f, "decap-ci/hello/a")
			lease(f, "decap-ci/hello/b")
		}, wantOutcome: "deferred", reason: "cap"},
		{name: "backend error", project: "decap-ci/hello", ref: "main", idem: failingIdempotency{},
			wantOutcome: "deferred", reason: "backend_error"},
		{name: "launch fails for now", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			f.launcher.FailLaunch(errors.New("executor down"))
		}, wantOutcome: "deferred", reason: "launch_failed"},
		{name: "launch can never work", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			f.launcher.FailLaunch(fmt.Errorf("%w: bad image", build.ErrInvalid))
		}, wantOutcome: "dropped", reason: "launch_failed"},
		{name: "unmanaged push", project: "Codertocat/Hello-World", ref: "master-old", trigger: build.TriggerPush, wantOutcome: "dropped", reason: "unmanaged"},
		{name: "unknown project", project: "nobody/nothing", ref: "main", wantOutcome: "dropped", reason: "unknown_project"},
		{name: "invalid project", project: "decap-ci/broken", ref: "main", wantOutcome: "dropped", reason: "invalid_project"},
		{name: "expired", project: "decap-ci/hello", ref: "main", age: 25 * time.Hour, setup: func(f *fixture, req build.Request) {
			other := build.Lease{Key: req.LockKey(), BuildID: build.NewID(t0), Owner: "x", AcquiredAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if err := f.locks.Acquire(ctx, other, 0); err != nil {
				t.Fatal(err)
			}
		}, wantOutcome: "dropped", reason: "expired"},
		{name: "already ended", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			rec := build.RecordFor(req)
			rec.Status = build.StatusCancelled
			f.records.Save(ctx, rec)
		}, wantOutcome: "dropped", reason: "already_ended"},
		{name: "duplicate delivery", project: "decap-ci/hello", ref: "main", setup: func(f *fixture, req build.Request) {
			if _, err := f.idem.Claim(ctx, req.IdempotencyKey(), build.NewID(t0.Add(-time.Hour)), time.Hour); err != nil {
				t.Fatal(err)
			}
		}, wantOutcome: "dropped", reason: "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := buildtest.NewClock(t0)
			f := newFixture(2, clock)
			trigger := tt.trigger
			if trigger == "" {
				trigger = build.TriggerAPI
			}
			req := request(tt.project, tt.ref, trigger, clock.Now().Add(-tt.age))
			if tt.setup != nil {
				tt.setup(f, req)
			}
			var idem []dispatch.Idempotency
			if tt.idem != nil {
				idem = append(idem, tt.idem)
			}
			d, reg := observed(f, nil, idem...)
			dec := d.Decide(ctx, req, message(t, req))
			if got := string(dec.Cause); got != tt.reason || dec.Action.String() != tt.wantOutcome {
				t.Fatalf("decision = %v/%s (%s), want %s/%s", dec.Action, got, dec.Reason, tt.wantOutcome, tt.reason)
			}
			if got := metricstest.Value(t, reg, "decap_dispatch_decisions_total", "outcome", tt.wantOutcome, "reason", tt.reason); got != 1 {
				t.Errorf("decap_dispatch_decisions_total{outcome=%q,reason=%q} = %v, want 1", tt.wantOutcome, tt.reason, got)
			}
			if got := decisionCount(t, reg); got != 1 {
				t.Errorf("%v decisions counted in all, want 1", got)
			}
			wantWaits := 0.0
			if tt.reason == "started" {
				wantWaits = 1
			}
			if got := metricstest.Value(t, reg, "decap_lock_wait_seconds"); got != wantWaits {
				t.Errorf("decap_lock_wait_seconds count = %v, want %v", got, wantWaits)
			}
		})
	}
}

// The lock wait runs from the request to the launch, deferrals included.
func TestMetricsLockWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := buildtest.NewClock(t0)
	f := newFixture(1, clock)
	d, reg := observed(f, nil)
	busy := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
	if dec := d.Decide(ctx, busy, message(t, busy)); dec.Action != dispatch.Launched {
		t.Fatalf("first: %v (%s)", dec.Action, dec.Reason)
	}
	req := request("decap-ci/hello", "main", build.TriggerPush, clock.Now())
	if dec := d.Decide(ctx, req, message(t, req)); dec.Cause != dispatch.CauseLocked {
		t.Fatalf("second while the first runs: %v/%s, want deferred/locked", dec.Action, dec.Cause)
	}
	clock.Advance(90 * time.Second)
	if !f.finishOne(ctx) {
		t.Fatal("nothing to finish")
	}
	dec := d.Decide(ctx, req, message(t, req))
	if dec.Action != dispatch.Launched || dec.Waited != 90*time.Second {
		t.Fatalf("second after the first ended: %v waited %v, want launched after 90s", dec.Action, dec.Waited)
	}
	if got := metricstest.Value(t, reg, "decap_lock_wait_seconds"); got != 2 {
		t.Errorf("decap_lock_wait_seconds count = %v, want 2", got)
	}
	if got := metricstest.Sum(t, reg, "decap_lock_wait_seconds"); math.Abs(got-90) > 1e-9 {
		t.Errorf("decap_lock_wait_seconds sum = %v, want 90", got)
	}
	for _, w := range []struct {
		outcome, reason string
		n               float64
	}{{"launched", "started", 2}, {"deferred", "locked", 1}} {
		if got := metricstest.Value(t, reg, "decap_dispatch_decisions_total", "outcome", w.outcome, "reason", w.reason); got != w.n {
			t.Errorf("decap_dispatch_decisions_total{%s,%s} = %v, want %v", w.outcome, w.reason, got, w.n)
		}
	}
}

// Handle counts what Decide never sees: a message it cannot parse.
func TestMetricsCountMalformed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(0, nil)
	if err := f.queue.SendRaw(ctx, "g", "dedup-1", []byte(`{"v":1,"team":`)); err != nil {
		t.Fatal(err)
	}
	msgs, err := f.queue.Receive(ctx, 1, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive = %v, %v", msgs, err)
	}
	d, reg := observed(f, nil)
	if dec := d.Handle(ctx, msgs[0]); dec.Action != dispatch.Dropped {
		t.Fatalf("Handle: %v (%s), want dropped", dec.Action, dec.Reason)
	}
	if got := metricstest.Value(t, reg, "decap_dispatch_decisions_total", "outcome", "dropped", "reason", "malformed"); got != 1 {
		t.Errorf("decap_dispatch_decisions_total{dropped,malformed} = %v, want 1", got)
	}
	if got := decisionCount(t, reg); got != 1 {
		t.Errorf("%v decisions counted in all, want 1", got)
	}
}

// Every decision through Run is counted once, and the paused gauge follows
// the gate.
func TestMetricsRunAndGate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(0, nil)
	gate := buildtest.NewGate()
	if err := gate.Set(ctx, build.GateState{Paused: true}); err != nil {
		t.Fatal(err)
	}
	d, reg := observed(f, gate)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the paused gauge", func() bool { return metricstest.Value(t, reg, "decap_dispatch_paused") == 1 })
	for i := range 3 {
		req := request("decap-ci/hello", fmt.Sprintf("b%d", i), build.TriggerPush, time.Now())
		if err := f.queue.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := gate.Set(ctx, build.GateState{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gauge to drop and three launches", func() bool {
		return metricstest.Value(t, reg, "decap_dispatch_paused") == 0 &&
			metricstest.Value(t, reg, "decap_dispatch_decisions_total", "outcome", "launched", "reason", "started") == 3
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := decisionCount(t, reg); got != 3 {
		t.Errorf("%v decisions counted, want 3", got)
	}
}

// Every log line about a build carries its build ID, lock key and delivery
// ID, so that one query finds a build's whole story.
func TestLogLinesCarryBuildKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var buf bytes.Buffer
	f := newFixture(1, buildtest.NewClock(t0))
	d := dispatch.New(f.cfg, dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem, Records: f.records, Launcher: f.launcher,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Now: f.clock.Now,
	})
	launched := request("decap-ci/hello", "main", build.TriggerPush, t0)
	unknown := request("nobody/nothing", "main", build.TriggerPush, t0)
	for _, req := range []build.Request{launched, unknown} {
		d.Handle(ctx, message(t, req))
	}
	// A backend failure before the once-only check.
	failing := request("decap-ci/hello", "other", build.TriggerPush, t0)
	dispatch.New(f.cfg, dispatch.Deps{
		Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: failingIdempotency{}, Records: f.records, Launcher: f.launcher,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Now: f.clock.Now,
	}).Decide(ctx, failing, message(t, failing))

	seen := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		seen[msg] = true
		for _, key := range []string{"build_id", "lock_key", "delivery_id"} {
			if v, _ := rec[key].(string); v == "" {
				t.Errorf("log line %q lacks %s: %s", msg, key, line)
			}
		}
	}
	for _, msg := range []string{"build launched", "request dropped", "dispatch failed, will retry"} {
		if !seen[msg] {
			t.Errorf("no %q line in:\n%s", msg, buf.String())
		}
	}
}
