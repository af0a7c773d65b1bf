package localexec_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/localexec"
)

// watcher returns an env with another Executor on e's run directory, as
// the reaper's process has beside the dispatcher's, polling every poll.
func (e env) watcher(t *testing.T, poll time.Duration) env {
	t.Helper()
	ex, err := localexec.New(localexec.Config{
		RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{}, PollInterval: poll, LaunchGrace: time.Minute,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	w := e
	w.ex = ex
	return w
}

// sockets lists the watchers' sockets in the run directory.
func (e env) sockets(t *testing.T) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(e.run, localexec.WatchDir, "*.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestWatchLearnsOfEndsWithoutPolling: watchers whose poll comes once an
// hour report builds that another Executor launched (the dispatcher's, in
// another process) when they end, however they end: the launcher wakes
// them. (The bound is a deadlock guard, not a measure of speed.)
func TestWatchLearnsOfEndsWithoutPolling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"ok": "echo built", "long": "echo started; sleep 300", "fails": "exit 3"}, time.Minute)

	// A build that ended before anyone watched: the first scans report
	// it. After them, only a wake-up can report anything within the hour.
	before := newJob("ok", time.Hour)
	if err := e.ex.Launch(t.Context(), before); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first build's result", func() bool {
		_, err := os.Stat(filepath.Join(e.dir(before.Request.BuildID), localexec.ResultFile))
		return err == nil
	})
	var watchers []*collector
	for range 2 {
		c := e.watcher(t, time.Hour).watch(t)
		c.outcome(t, before.Request.BuildID)
		watchers = append(watchers, c)
	}
	if got := e.sockets(t); len(got) != 2 {
		t.Fatalf("watchers' sockets: got %q, want 2", got)
	}

	succeeds, fails, broken, killed := newJob("ok", time.Hour), newJob("fails", time.Hour), newJob("broken", time.Hour), newJob("long", time.Hour)
	for _, job := range []build.Job{succeeds, fails, broken, killed} {
		if err := e.ex.Launch(t.Context(), job); err != nil {
			t.Fatalf("Launch %s: %v", job.Request.Project, err)
		}
	}
	// Killed from outside, as the OOM killer would: no result.
	e.waitLog(t, killed.Request.BuildID, "started")
	if err := syscall.Kill(readPID(t, filepath.Join(e.dir(killed.Request.BuildID), "pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, c := range watchers {
		for _, tc := range []struct {
			job    build.Job
			status build.Status
		}{
			{succeeds, build.StatusSucceeded},
			{fails, build.StatusFailed},
			{broken, build.StatusErrored}, // ended by Launch: its scripts could not be exported
			{killed, build.StatusErrored}, // no result: Watch makes one up
		} {
			o := c.outcome(t, tc.job.Request.BuildID)
			if o.Status != tc.status {
				t.Errorf("watcher %d, build %s: got status %q (%s), want %q", i, tc.job.Request.Project, o.Status, o.Reason, tc.status)
			}
		}
	}
}

// TestWatchSockets: the sockets' directory is the service user's alone; a
// socket whose watcher died without removing it is removed by the next
// wake-up; a watcher that stops removes its own.
func TestWatchSockets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{}, time.Minute)
	w := e.watcher(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.ex.Watch(ctx, func(context.Context, build.Outcome) error { return nil }) }()
	waitFor(t, "the watcher's socket", func() bool { return len(e.sockets(t)) == 1 })
	own := e.sockets(t)[0]

	dir := filepath.Join(e.run, localexec.WatchDir)
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o700 {
		t.Errorf("mode of %s: got %v, want 0700", localexec.WatchDir, got)
	}

	// A watcher killed without cleaning up leaves its socket file.
	stale := filepath.Join(dir, "0123456789abcdef.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stale, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the stale socket should stay after its close: %v", err)
	}
	// A build that ends at once (its scripts cannot be exported) wakes
	// the watchers, the stale one too.
	if err := e.ex.Launch(t.Context(), newJob("broken", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale socket after a wake-up: got %v, want it removed", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("the live watcher's socket after a wake-up: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if got := e.sockets(t); len(got) != 0 {
		t.Errorf("sockets after the watcher stopped: got %q, want none", got)
	}
}

// TestWatchPollsWithoutSockets: a watcher that cannot bind a socket (the
// directory's name is taken by a file) still finds ends, by its poll, and
// launchers still launch.
func TestWatchPollsWithoutSockets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"ok": "echo built"}, time.Minute)
	if err := os.WriteFile(filepath.Join(e.run, localexec.WatchDir), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.watch(t) // polls every 50ms
	job := newJob("ok", time.Hour)
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome(t, job.Request.BuildID); o.Status != build.StatusSucceeded {
		t.Errorf("got status %q (%s), want succeeded", o.Status, o.Reason)
	}
}

// TestWatchSocketsOnALongPath: a run directory whose sockets' paths are
// too long for a unix socket address (108 bytes) is reached through
// /proc/self/fd; its builds' ends still wake the watcher.
func TestWatchSocketsOnALongPath(t *testing.T) {
	t.Parallel()
	tmp := buildTempDir(t)
	long := filepath.Join(tmp, strings.Repeat("d", 100))
	if err := os.Mkdir(long, 0o711); err != nil {
		t.Fatal(err)
	}
	ex, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(long, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{"ok": "echo built"}, PollInterval: time.Hour, LaunchGrace: time.Minute,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := env{ex: ex, run: filepath.Join(long, "run"), tmp: tmp}
	c := e.watcher(t, time.Hour).watch(t)
	waitFor(t, "the watcher's socket", func() bool { return len(e.sockets(t)) == 1 })
	if n := len(e.sockets(t)[0]); n <= 108 {
		t.Fatalf("socket path of %d bytes: the test needs one too long to bind directly", n)
	}
	job := newJob("ok", time.Hour)
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome(t, job.Request.BuildID); o.Status != build.StatusSucceeded {
		t.Errorf("got status %q (%s), want succeeded", o.Status, o.Reason)
	}
}
