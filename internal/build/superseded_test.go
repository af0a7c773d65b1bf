package build_test

import (
	"slices"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestWaitingSuperseded: the newest waiting request that supersedes, and
// the waiting requests older than it that no dispatcher began to launch.
func TestWaitingSuperseded(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 3, 12, 0, 0, 0, time.UTC)
	rec := func(id string, at time.Duration, edit func(r *build.Record)) build.Record {
		r := build.Record{BuildID: build.ID(id), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base.Add(at)}
		if edit != nil {
			edit(&r)
		}
		return r
	}
	deferred := func(r *build.Record) { r.Status = build.StatusDeferred }
	launching := func(r *build.Record) { r.LaunchingAt = base }
	running := func(r *build.Record) { r.Status = build.StatusRunning }
	rebuild := func(r *build.Record) { r.RebuildOf = "x" }
	retry := func(r *build.Record) { r.RetryOf = "x" }
	ended := func(r *build.Record) { r.Status = build.StatusSuperseded }

	accepted := rec("n", 10*time.Second, nil)
	for _, tc := range []struct {
		name       string
		list       []build.Record
		accepted   build.Record
		wantNewest build.ID
		wantEnded  []build.ID
	}{
		{"nothing else", nil, accepted, "n", nil},
		{"the list does not show it yet", []build.Record{rec("a", 0, nil)}, accepted, "n", []build.ID{"a"}},
		{"queued and deferred end, in list order", []build.Record{rec("a", 0, nil), rec("b", time.Second, deferred), accepted}, accepted, "n", []build.ID{"a", "b"}},
		{"launching, running and ended stay", []build.Record{rec("a", 0, launching), rec("b", 0, running), rec("c", 0, ended), accepted}, accepted, "n", nil},
		{"a newer one ends the accepted", []build.Record{rec("a", 0, nil), accepted, rec("z", 20*time.Second, nil)}, accepted, "z", []build.ID{"a", "n"}},
		{"a newer one being launched ends it too", []build.Record{accepted, rec("z", 20*time.Second, launching)}, accepted, "z", []build.ID{"n"}},
		{"a newer running build is no newest", []build.Record{accepted, rec("z", 20*time.Second, running)}, accepted, "n", nil},
		{"same time: the larger build ID is newer", []build.Record{rec("m", 10*time.Second, nil), accepted, rec("o", 10*time.Second, nil)}, accepted, "o", []build.ID{"m", "n"}},
		{"a newer rebuild or retry is no newest", []build.Record{accepted, rec("y", 20*time.Second, rebuild), rec("z", 20*time.Second, retry)}, accepted, "n", nil},
		{"older rebuilds and retries end", []build.Record{rec("a", 0, rebuild), rec("b", 0, retry), accepted}, accepted, "n", []build.ID{"a", "b"}},
		{"a rebuild supersedes nothing", []build.Record{rec("a", 0, nil), rec("r", 10*time.Second, rebuild)}, rec("r", 10*time.Second, rebuild), "r", nil},
		{"a retry supersedes nothing", []build.Record{rec("a", 0, nil)}, rec("r", 10*time.Second, retry), "r", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			newest, ended := build.WaitingSuperseded(tc.list, tc.accepted)
			var ids []build.ID
			for _, r := range ended {
				ids = append(ids, r.BuildID)
			}
			if newest.BuildID != tc.wantNewest || !slices.Equal(ids, tc.wantEnded) {
				t.Errorf("WaitingSuperseded() = %s, %v; want %s, %v", newest.BuildID, ids, tc.wantNewest, tc.wantEnded)
			}
		})
	}
}
