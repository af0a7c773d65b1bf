package localexec_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/localexec"
)

// countRuns returns how many times the script of countingScripts ran.
func countRuns(t *testing.T, counter string) int {
	t.Helper()
	data, err := os.ReadFile(counter)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "run\n")
}

func (e env) liveLog(t *testing.T, id build.ID) string {
	t.Helper()
	rc, err := e.ex.OpenLiveLog(id)
	if err != nil {
		t.Fatalf("OpenLiveLog: %v", err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	return string(data)
}

// aliveLockHeld probes a build's alive.lock as another process would; no
// alive.lock is not held.
func aliveLockHeld(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "alive.lock"))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatalf("open alive.lock: %v", err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true
	}
	if err != nil {
		t.Fatalf("flock alive.lock: %v", err)
	}
	return false
}

// A launcher can die after it started the entrypoint and before it
// recorded its pid. The redelivered request's Launch must neither run the
// build again nor touch the running build's directory (its live log, its
// scripts).
func TestRelaunchAfterPIDLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	counter := filepath.Join(e.tmp, "runs")
	shareFile(t, counter)
	script := fmt.Sprintf("echo run >> %q; echo ready; sleep 1; echo finished", counter)
	e.ex, _ = localexec.New(localexec.Config{
		RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{"once": script}, PollInterval: 50 * time.Millisecond,
	})
	c := e.watch(t)
	job := newJob("once", time.Minute)
	id := job.Request.BuildID
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	e.waitLog(t, id, "ready")
	// What the dead launcher would have left: no pid file.
	if err := os.Remove(filepath.Join(e.dir(id), "pid")); err != nil {
		t.Fatal(err)
	}
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("second Launch: %v", err)
	}
	if log := e.liveLog(t, id); !strings.Contains(log, "ready\n") {
		t.Errorf("live log after the second Launch = %q, want the running build's log", log)
	}
	if running, err := e.ex.Running(t.Context()); err != nil || len(running) != 1 {
		t.Errorf("Running without a pid file = %v, %v; want the build", running, err)
	}
	if err := e.ex.Remove(t.Context(), id); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Remove of the running build: %v, want ErrConflict", err)
	}
	o := c.outcome(t, id)
	if o.Status != build.StatusSucceeded {
		t.Errorf("outcome = %+v, want succeeded", o)
	}
	if n := countRuns(t, counter); n != 1 {
		t.Errorf("build.sh ran %d times, want 1", n)
	}
	if log := string(e.readBlob(t, o.LogKey)); !strings.Contains(log, "ready\nfinished\n") {
		t.Errorf("stored log = %q, want the one run's whole output", log)
	}
}

// blockingScripts is fakeScripts whose Export signals entered and then
// waits for release.
type blockingScripts struct {
	fakeScripts
	entered chan struct{}
	release chan struct{}
}

func (s blockingScripts) Export(ctx context.Context, commit, team, project, dest string) error {
	close(s.entered)
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.fakeScripts.Export(ctx, commit, team, project, dest)
}

// A Cancel that races a launch in progress is not lost: it waits for the
// launch, and the build ends cancelled without running build.sh through.
func TestCancelWhileLaunching(t *testing.T) {
	t.Parallel()
	tmp := buildTempDir(t)
	counter := filepath.Join(tmp, "runs")
	shareFile(t, counter)
	scripts := blockingScripts{
		fakeScripts: fakeScripts{"slow": fmt.Sprintf("echo run >> %q; sleep 30; echo done >> %q", counter, counter)},
		entered:     make(chan struct{}),
		release:     make(chan struct{}),
	}
	ex, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: scripts, PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := env{ex: ex, run: filepath.Join(tmp, "run"), tmp: tmp}
	c := e.watch(t)
	job := newJob("slow", time.Hour)
	id := job.Request.BuildID
	launched := make(chan error, 1)
	go func() { launched <- ex.Launch(context.Background(), job) }()
	<-scripts.entered
	cancelled := make(chan error, 1)
	go func() { cancelled <- ex.Cancel(context.Background(), id) }()
	// Let Cancel come as far as it does while the export blocks.
	time.Sleep(200 * time.Millisecond)
	close(scripts.release)
	if err := <-cancelled; err != nil {
		t.Errorf("Cancel during the launch: %v, want nil", err)
	}
	if err := <-launched; err != nil {
		t.Errorf("Launch: %v", err)
	}
	o := c.outcome(t, id)
	if o.Status != build.StatusCancelled {
		t.Errorf("outcome = %+v, want cancelled", o)
	}
	if data, _ := os.ReadFile(counter); strings.Contains(string(data), "done") {
		t.Errorf("build.sh ran to its end after the cancel")
	}
	// A late redelivery starts nothing.
	if err := ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("late Launch: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if running, _ := ex.Running(t.Context()); len(running) != 0 {
		t.Errorf("Running after a late Launch = %v, want none", running)
	}
}

// A Cancel right after Launch returned reaches an entrypoint that takes it
// as a cancel: the build ends cancelled, not errored for a missing result.
func TestCancelRightAfterLaunch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"slow": "sleep 30"}, time.Minute)
	c := e.watch(t)
	var ids []build.ID
	for range 3 {
		job := newJob("slow", time.Hour)
		if err := e.ex.Launch(t.Context(), job); err != nil {
			t.Fatalf("Launch: %v", err)
		}
		if err := e.ex.Cancel(t.Context(), job.Request.BuildID); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		ids = append(ids, job.Request.BuildID)
	}
	for _, id := range ids {
		if o := c.outcome(t, id); o.Status != build.StatusCancelled {
			t.Errorf("outcome = %s %q, want cancelled", o.Status, o.Reason)
		}
	}
}

// A build whose launch was interrupted before anything started is recorded
// as cancelled by Cancel, and a later Launch starts nothing.
func TestCancelUnstarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"ok": "echo fine"}, time.Hour)
	job := newJob("ok", time.Minute)
	id := job.Request.BuildID
	if err := os.MkdirAll(filepath.Join(e.dir(id), "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.ex.Cancel(t.Context(), id); err != nil {
		t.Fatalf("Cancel of an unstarted build: %v, want nil", err)
	}
	c := e.watch(t)
	o := c.outcome(t, id)
	if o.Status != build.StatusCancelled || o.Reason != localexec.ReasonCancelledBeforeStart {
		t.Errorf("outcome = %s %q, want cancelled %q", o.Status, o.Reason, localexec.ReasonCancelledBeforeStart)
	}
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("late Launch: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir(id), "pid")); err == nil {
		t.Error("a late Launch started the cancelled build")
	}
	if err := e.ex.Cancel(t.Context(), id); err != nil {
		t.Errorf("second Cancel: %v, want nil", err)
	}
}

// alive.lock is held by the entrypoint alone: not by build.sh, and not by
// what build.sh leaves behind.
func TestAliveLockHeldByEntrypointOnly(t *testing.T) {
	t.Parallel()
	script := `setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$HOME/daemon"
echo "alive.lock descriptors: $(ls -l /proc/$$/fd | grep -c alive.lock)"
echo ready; sleep 1`
	e := newEnv(t, fakeScripts{"d": script}, time.Minute)
	c := e.watch(t)
	job := newJob("d", time.Minute)
	id := job.Request.BuildID
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	e.waitLog(t, id, "ready")
	if !aliveLockHeld(t, e.dir(id)) {
		t.Error("alive.lock free while the build runs")
	}
	o := c.outcome(t, id)
	daemon := readPID(t, filepath.Join(e.dir(id), localexec.HomeDir, "daemon"))
	t.Cleanup(func() { syscall.Kill(daemon, syscall.SIGKILL) })
	if o.Status != build.StatusSucceeded {
		t.Fatalf("outcome = %+v, want succeeded", o)
	}
	if log := e.liveLog(t, id); !strings.Contains(log, "alive.lock descriptors: 0\n") {
		t.Errorf("build.sh holds alive.lock:\n%s", log)
	}
	if localexec.Isolates() {
		// Under a build uid the entrypoint kills it before it ends
		// (TestStrayProcessesStopped); alive.lock is free all the same.
		waitFor(t, "the daemonized process to be stopped", func() bool { return gone(daemon) })
	} else if gone(daemon) {
		t.Fatal("the daemonized process is gone; the test proves nothing")
	}
	waitFor(t, "alive.lock to be free", func() bool { return !aliveLockHeld(t, e.dir(id)) })
}

// An entrypoint started with -handshake but without the build's alive.lock
// as descriptor 3 runs nothing and records nothing.
func TestHandshakeRefusesForeignDescriptor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"alive.lock", "other"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	foreign, err := os.Open(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	recordedR, recordedW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer recordedR.Close()
	recordedW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	defer readyW.Close()
	cmd := exec.Command(entrypointPath, "-run-dir", dir, "-handshake", "-blobs", t.TempDir())
	cmd.ExtraFiles = []*os.File{foreign, recordedR, readyW}
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 125 || !strings.Contains(string(out), "descriptor 3 is not") {
		t.Errorf("entrypoint = %v, exit code %d, output %q; want 125 and the reason", err, code, out)
	}
	for _, name := range []string{"pid", localexec.ResultFile, localexec.ConsoleLogFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s written", name)
		}
	}
}
