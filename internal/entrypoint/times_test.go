package entrypoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// lineOf returns the number of the first line of log holding s (from 1).
func lineOf(t *testing.T, log, s string) int64 {
	t.Helper()
	for i, line := range strings.Split(log, "\n") {
		if strings.Contains(line, s) {
			return int64(i + 1)
		}
	}
	t.Fatalf("no line holds %q in\n%s", s, log)
	return 0
}

// at is the time the index gives line n, in ms.
func at(x build.LogTimes, n int64) int64 {
	i := sort.Search(len(x.Times), func(i int) bool { return x.Times[i][0] > n })
	if i == 0 {
		return -1
	}
	return x.Times[i-1][1]
}

// TestRunUploadsLineTimes: beside the log goes its line-time index, under
// the build's own key, saying when the lines began; the live file has the
// same index.
func TestRunUploadsLineTimes(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, `
echo "before the pause"
sleep 0.6
echo "after the pause"
printf 'a\nb\nc'
`)
	cfg.LiveTimes = filepath.Join(filepath.Dir(cfg.LiveLog), "console.times.json")
	res := entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded {
		t.Fatalf("Run = %+v", res)
	}
	log := up.gunzip(t, build.LogKey(testID))
	var got build.LogTimes
	if err := json.Unmarshal([]byte(up.gunzip(t, build.LogTimesKey(testID))), &got); err != nil {
		t.Fatalf("line times object: %v", err)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if want := int64(strings.Count(strings.TrimSuffix(log, "\n"), "\n") + 1); got.Lines != want {
		t.Errorf("index covers %d lines, the log has %d:\n%s", got.Lines, want, log)
	}
	if got.Start.After(res.StartedAt) || res.StartedAt.Sub(got.Start) > 5e9 {
		t.Errorf("index starts %v, the build %v", got.Start, res.StartedAt)
	}
	before, after := lineOf(t, log, "before the pause"), lineOf(t, log, "after the pause")
	if at(got, 1) != 0 || at(got, before) >= 600 {
		t.Errorf("lines 1 and %d began at %d and %d ms; want 0 and under 600: %+v", before, at(got, 1), at(got, before), got)
	}
	if ms := at(got, after); ms < 600 || ms-at(got, before) < 600 {
		t.Errorf("line %d (after a sleep of 0.6 s) began at %d ms, line %d at %d ms: %+v", after, ms, before, at(got, before), got)
	}
	data, err := os.ReadFile(cfg.LiveTimes)
	if err != nil {
		t.Fatalf("live line times: %v", err)
	}
	var live build.LogTimes
	if err := json.Unmarshal(data, &live); err != nil {
		t.Fatalf("live line times: %v", err)
	}
	if fmt.Sprint(live) != fmt.Sprint(got) {
		t.Errorf("live line times %+v, uploaded %+v", live, got)
	}
}

// TestRunLineTimesUploadFails: the line times are the log's extra; a
// failed upload of them leaves the build's status and reason alone, and
// one that cannot succeed (no URL for the key) is not retried.
func TestRunLineTimesUploadFails(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, "echo built")
	up.failFirst[build.LogTimesKey(testID)] = -1
	res := entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded || res.Reason != "" || res.LogKey == "" {
		t.Errorf("Run = %+v, want succeeded with no reason", res)
	}
	if n := up.calls[build.LogTimesKey(testID)]; n != 3 {
		t.Errorf("line times upload tried %d times, want 3", n)
	}

	cfg, up = setup(t, "echo built")
	cfg.Uploader = noURLFor{up, build.LogTimesKey(testID)}
	res = entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded || res.Reason != "" || res.LogKey == "" {
		t.Errorf("Run = %+v, want succeeded with no reason", res)
	}
	if n := up.calls[build.LogTimesKey(testID)]; n != 1 {
		t.Errorf("line times upload without a URL tried %d times, want 1", n)
	}
}

// noURLFor is an Uploader that has no URL for key, as HTTPUploader.
type noURLFor struct {
	*memUploader
	key string
}

func (u noURLFor) Put(ctx context.Context, key string, r io.Reader) error {
	if key == u.key {
		u.mu.Lock()
		u.calls[key]++
		u.mu.Unlock()
		return fmt.Errorf("%w: no upload URL for %s", build.ErrInvalid, key)
	}
	return u.memUploader.Put(ctx, key, r)
}
