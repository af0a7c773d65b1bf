package localexec_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/localexec"
)

// TestExecutorContract runs the executor suite on real processes: each
// ending is a build.sh that does it, and the builds upload over HTTP to a
// loopback server, which refuses the uploads of the builds meant to fail
// them. Watch polls once an hour (buildtest.SuitePoll): the ends it reports
// come from the launcher's wake-ups, and its reports after a failed handle
// from its retry.
func TestExecutorContract(t *testing.T) {
	t.Parallel()
	buildtest.TestExecutor(t, buildtest.ExecutorHarness{New: newLocalDriver})
}

// localDriver makes local builds end as the suite asks, through what their
// build.sh does.
type localDriver struct {
	run  string // RunDir
	runs string // every build.sh appends its build ID here when it starts

	mu      sync.Mutex
	endings map[build.ID]buildtest.ExecutorEnding
}

func newLocalDriver(t *testing.T) (buildtest.Executor, buildtest.ExecutorDriver) {
	t.Helper()
	// Reachable by build users of their own, should builds run as such.
	tmp := t.TempDir()
	for _, dir := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	d := &localDriver{run: filepath.Join(tmp, "run"), runs: filepath.Join(tmp, "runs"), endings: map[build.ID]buildtest.ExecutorEnding{}}
	if err := os.WriteFile(d.runs, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.runs, 0o666); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(d.store))
	t.Cleanup(srv.Close)
	start := fmt.Sprintf("echo \"$BUILD_ID\" >> %q\n", d.runs)
	ex, err := localexec.New(localexec.Config{
		RunDir: d.run, EntrypointPath: entrypointPath, PollInterval: buildtest.SuitePoll, LaunchGrace: time.Minute,
		Uploads: func(_ context.Context, id build.ID, _ time.Duration) (map[string]string, error) {
			return map[string]string{build.LogKey(id): srv.URL + "/" + build.LogKey(id), build.ArtifactsKey(id): srv.URL + "/" + build.ArtifactsKey(id)}, nil
		},
		// The project names the ending; "errors" has no build.sh.
		Scripts: fakeScripts{
			"succeeds":     start + "echo built",
			"fails":        start + "exit 3",
			"times-out":    start + "sleep 300",
			"upload-fails": start + "echo built",
			"runs-long":    start + "sleep 300",
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ex, d
}

// store takes an upload, unless it is of a build meant to fail its uploads.
func (d *localDriver) store(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) == 3 {
		d.mu.Lock()
		ending := d.endings[build.ID(parts[1])]
		d.mu.Unlock()
		if ending == buildtest.EndUploadFails {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (d *localDriver) Job(id build.ID, ending buildtest.ExecutorEnding) build.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endings[id] = ending
	project := map[buildtest.ExecutorEnding]string{
		buildtest.EndSucceeds: "succeeds", buildtest.EndFails: "fails", buildtest.EndTimesOut: "times-out",
		buildtest.EndErrors: "errors", buildtest.EndUploadFails: "upload-fails", buildtest.EndRunsLong: "runs-long",
	}[ending]
	timeout := time.Hour
	if ending == buildtest.EndTimesOut {
		timeout = time.Second
	}
	job := newJob(project, timeout)
	job.Request.BuildID = id
	return job
}

// Watching: Watch binds its socket, then scans the run directory at once;
// an end before the scan is seen by it, one after it wakes the next.
func (d *localDriver) Watching(*testing.T) {}

// Drive waits for build.sh of a long build to start; the others end by
// themselves.
func (d *localDriver) Drive(t *testing.T, id build.ID) {
	t.Helper()
	d.mu.Lock()
	ending := d.endings[id]
	d.mu.Unlock()
	if ending != buildtest.EndRunsLong {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for d.Runs(t, id) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("build.sh of %s did not start within a minute", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// KillFromOutside kills decap-entrypoint with SIGKILL, as a person or the
// OOM killer might.
func (d *localDriver) KillFromOutside(t *testing.T, id build.ID) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.run, id.PodName(), "pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil || pid <= 1 {
		t.Fatalf("pid file %q: %v", data, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func (d *localDriver) Runs(t *testing.T, id build.ID) int {
	t.Helper()
	data, err := os.ReadFile(d.runs)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), string(id)+"\n")
}
