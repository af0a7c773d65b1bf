package localexec_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/localexec"
)

// A launcher that dies right after it started the entrypoint (before it
// recorded the pid): the entrypoint records itself and runs the build once;
// the redelivered Launch, at once or while the build runs, starts nothing
// and leaves the running build's directory alone.
func TestLauncherDiesAfterStart(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		waitForReady bool
	}{
		{"redelivered at once", false},
		{"redelivered while running", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, time.Minute)
			counter := filepath.Join(e.tmp, "runs")
			shareFile(t, counter)
			cfg := localexec.Config{
				RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
				Scripts:      fakeScripts{"once": fmt.Sprintf("echo run >> %q; echo ready; sleep 1; echo finished", counter)},
				PollInterval: 50 * time.Millisecond,
			}
			crashing, err := localexec.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			localexec.CrashAfterStart(crashing)
			e.ex, _ = localexec.New(cfg)
			c := e.watch(t)
			job := newJob("once", time.Minute)
			id := job.Request.BuildID
			if err := crashing.Launch(t.Context(), job); err == nil {
				t.Fatal("Launch of the crashing launcher succeeded")
			}
			if tt.waitForReady {
				e.waitLog(t, id, "ready")
			}
			if err := e.ex.Launch(t.Context(), job); err != nil {
				t.Fatalf("redelivered Launch: %v", err)
			}
			if tt.waitForReady {
				if log := e.liveLog(t, id); !strings.Contains(log, "ready\n") {
					t.Errorf("live log after the redelivery = %q, want the running build's", log)
				}
			}
			o := c.outcome(t, id)
			if o.Status != build.StatusSucceeded {
				t.Errorf("outcome = %+v, want succeeded", o)
			}
			if n := countRuns(t, counter); n != 1 {
				t.Errorf("build.sh ran %d times, want 1", n)
			}
			if o.LogKey == "" {
				return
			}
			if log := string(e.readBlob(t, o.LogKey)); !strings.Contains(log, "ready\nfinished\n") {
				t.Errorf("stored log = %q, want the one run's whole output", log)
			}
		})
	}
}

// A launcher that cannot record the pid leaves nothing running: the build
// script never starts, and the retry runs it once.
func TestPIDWriteFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	counter := filepath.Join(e.tmp, "runs")
	shareFile(t, counter)
	cfg := localexec.Config{
		RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts:      fakeScripts{"once": fmt.Sprintf("echo run >> %q; sleep 1", counter)},
		PollInterval: 50 * time.Millisecond,
	}
	failing, err := localexec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	localexec.FailPIDWrite(failing, 500*time.Millisecond)
	job := newJob("once", time.Minute)
	id := job.Request.BuildID
	if err := failing.Launch(t.Context(), job); err == nil || !strings.Contains(err.Error(), "record entrypoint pid") {
		t.Fatalf("Launch = %v, want a pid error", err)
	}
	if running, _ := failing.Running(t.Context()); len(running) != 0 {
		t.Errorf("Running after the failed launch = %v, want none", running)
	}
	if aliveLockHeld(t, e.dir(id)) {
		t.Error("alive.lock held after the failed launch")
	}
	time.Sleep(300 * time.Millisecond)
	if n := countRuns(t, counter); n != 0 {
		t.Fatalf("build.sh ran %d times after the failed launch, want 0", n)
	}
	e.ex, _ = localexec.New(cfg)
	c := e.watch(t)
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("retried Launch: %v", err)
	}
	if o := c.outcome(t, id); o.Status != build.StatusSucceeded {
		t.Errorf("outcome = %+v, want succeeded", o)
	}
	if n := countRuns(t, counter); n != 1 {
		t.Errorf("build.sh ran %d times, want 1", n)
	}
}
