package reap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/reap"
)

// leaseOf returns the unexpired lease of id; ok false if it holds none.
func leaseOf(t *testing.T, f *fixture, id build.ID) (build.Lease, bool) {
	t.Helper()
	leases, err := f.locks.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.BuildID == id {
			return l, true
		}
	}
	return build.Lease{}, false
}

// TestReconcileRenewsLeasesOfLiveBuilds runs a build past the lease the
// dispatcher gave it (an upload after its deadline): the reaper's
// reconciliation, every minute, keeps its lock and slot until it ends.
func TestReconcileRenewsLeasesOfLiveBuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	long := f.running(t, "main") // its lease: 1h
	gone := f.running(t, "gone")
	f.exec.Vanish(gone.BuildID)
	// A lease longer than the renewal is left as it is.
	far := f.running(t, "far")
	farUntil := t0.Add(5 * time.Hour)
	if err := f.locks.Extend(ctx, far.LockKey(), far.BuildID, farUntil); err != nil {
		t.Fatal(err)
	}
	for range 90 { // an hour and a half, reconciling every minute
		f.clock.Advance(time.Minute)
		if err := f.reaper.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile() at %v error = %v", f.clock.Now(), err)
		}
	}
	lease, ok := leaseOf(t, f, long.BuildID)
	if want := f.clock.Now().Add(reap.DefaultRenewFor - time.Minute); !ok || lease.ExpiresAt.Before(want) {
		t.Errorf("lease of the live build = %+v (held %t), want one expiring no earlier than %v", lease, ok, want)
	}
	if lease, ok := leaseOf(t, f, far.BuildID); !ok || !lease.ExpiresAt.Equal(farUntil) {
		t.Errorf("long lease = %+v (held %t), want it kept at %v", lease, ok, farUntil)
	}
	if _, ok := leaseOf(t, f, gone.BuildID); ok {
		t.Errorf("the vanished build's lease was renewed")
	}
	// The build ends: its lock goes, and is not renewed again.
	if err := f.reaper.Handle(ctx, outcome(long, build.StatusSucceeded, 0, f.clock.Now())); err != nil {
		t.Fatal(err)
	}
	if err := f.reaper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if lease, ok := leaseOf(t, f, long.BuildID); ok {
		t.Errorf("lease of the ended build = %+v, want none", lease)
	}
}

func TestReconcileRenewsForConfiguredTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	f.reaper = f.reaperWith(func(c *reap.Config, _ *reap.Deps) { c.RenewFor = 3 * time.Hour })
	rec := f.running(t, "main")
	if err := f.reaper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if lease, ok := leaseOf(t, f, rec.BuildID); !ok || !lease.ExpiresAt.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("lease = %+v (held %t), want it to expire at %v", lease, ok, t0.Add(3*time.Hour))
	}
}

// failingExtend fails Extend as an unreachable store would.
type failingExtend struct {
	*buildtest.FakeLocks
	mu    sync.Mutex
	calls int
}

func (l *failingExtend) Extend(_ context.Context, key string, _ build.ID, _ time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	return fmt.Errorf("extend lock %s: %w", key, build.ErrUnavailable)
}

// A renewal that fails is an error of Reconcile (tried again a minute
// later); one whose lease is gone (expired, or the build ended meanwhile)
// is not: nothing comes back to life.
func TestReconcileRenewalFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture()
	rec := f.running(t, "main")
	locks := &failingExtend{FakeLocks: f.locks}
	r := f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Locks = locks })
	if err := r.Reconcile(ctx); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Reconcile() with a failing store error = %v, want ErrUnavailable", err)
	}
	if locks.calls != 1 {
		t.Errorf("Extend() called %d times, want 1", locks.calls)
	}

	f.clock.Advance(2 * time.Hour) // its lease ran out
	var logs bytes.Buffer
	r = f.reaperWith(func(_ *reap.Config, d *reap.Deps) { d.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	if err := r.Reconcile(ctx); err != nil {
		t.Errorf("Reconcile() of a live build without a lease error = %v, want nil", err)
	}
	if lease, ok := leaseOf(t, f, rec.BuildID); ok {
		t.Errorf("an expired lease came back: %+v", lease)
	}
	var line struct {
		Level   string `json:"level"`
		Msg     string `json:"msg"`
		BuildID string `json:"build_id"`
		LockKey string `json:"lock_key"`
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Level != "ERROR" || line.BuildID != string(rec.BuildID) ||
		line.LockKey != rec.LockKey() || !strings.Contains(line.Msg, "holds no lock") {
		t.Errorf("log = %q, want one error line saying build %s holds no lock", logs.String(), rec.BuildID)
	}

	// Ended since its record was read: nothing to say.
	logs.Reset()
	ended := f.running(t, "ended")
	if _, err := f.locks.Release(ctx, ended.LockKey(), ended.BuildID); err != nil {
		t.Fatal(err)
	}
	r = f.reaperWith(func(_ *reap.Config, d *reap.Deps) {
		d.Records, d.Logger = endingRecords{f.records, ended.BuildID}, slog.New(slog.NewJSONHandler(&logs, nil))
	})
	if err := r.Reconcile(ctx); err != nil {
		t.Errorf("Reconcile() error = %v, want nil", err)
	}
	if strings.Contains(logs.String(), string(ended.BuildID)) {
		t.Errorf("log = %q, want nothing about the ended build", logs.String())
	}
}

// endingRecords lists build id as running but answers Get with it ended:
// it ended between the two reads.
type endingRecords struct {
	*buildtest.FakeRecords
	id build.ID
}

func (r endingRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	rec, err := r.FakeRecords.Get(ctx, id)
	if err == nil && id == r.id {
		rec.Status = build.StatusSucceeded
	}
	return rec, err
}
