package localexec_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/localfs"
)

// entrypointPath is the decap-entrypoint binary TestMain builds.
var entrypointPath string

func TestMain(m *testing.M) {
	if os.Getenv(signalAllEnv) != "" {
		signalAll() // never returns
	}
	// A prebuilt binary, for running the tests as a user who cannot build
	// (the non-root half of isolate_test.go).
	if p := os.Getenv("LOCALEXEC_TEST_ENTRYPOINT"); p != "" {
		entrypointPath = p
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "localexec-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	entrypointPath = filepath.Join(dir, "decap-entrypoint")
	out, err := exec.Command("go", "build", "-o", entrypointPath, "github.com/decap-ci/decap/build-container/entrypoint").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build decap-entrypoint: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeScripts exports one build.sh per project; a project without a script
// exports nothing, and "broken" fails to export.
type fakeScripts map[string]string

func (s fakeScripts) Export(ctx context.Context, commit, team, project, dest string) error {
	if project == "broken" {
		return errors.New("commit abc123 has no acme/broken")
	}
	script, ok := s[project]
	if !ok {
		return nil
	}
	p := filepath.Join(dest, team, project, "build.sh")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(script), 0o644)
}

type env struct {
	ex    *localexec.Executor
	blobs *localfs.Blobs
	run   string
	tmp   string
}

func newEnv(t *testing.T, scripts fakeScripts, grace time.Duration) env {
	t.Helper()
	tmp := buildTempDir(t)
	ex, err := localexec.New(localexec.Config{
		RunDir:         filepath.Join(tmp, "run"),
		BlobsDir:       filepath.Join(tmp, "blobs"),
		EntrypointPath: entrypointPath,
		Scripts:        scripts,
		PollInterval:   50 * time.Millisecond,
		LaunchGrace:    grace,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	blobs, err := localfs.NewBlobs(filepath.Join(tmp, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return env{ex: ex, blobs: blobs, run: filepath.Join(tmp, "run"), tmp: tmp}
}

func newJob(project string, timeout time.Duration) build.Job {
	now := time.Now()
	return build.Job{
		Request: build.Request{
			V: build.MessageVersion, BuildID: build.NewID(now), Team: "acme", Project: project,
			Ref: "main", RefType: build.Branch, SHA: "0123456789abcdef0123456789abcdef01234567",
			Trigger: build.TriggerManual, RequestedAt: now,
		},
		Descriptor:    build.Descriptor{BuildImage: "debian:bookworm"},
		CatalogCommit: "abc123",
		Timeout:       timeout,
	}
}

func (e env) dir(id build.ID) string { return filepath.Join(e.run, id.PodName()) }

// collector records what Watch hands to its handle.
type collector struct {
	mu    sync.Mutex
	got   map[build.ID]build.Outcome
	calls map[build.ID]int
	fail  bool // handle returns an error
}

// watch runs Watch until the test ends.
func (e env) watch(t *testing.T) *collector {
	t.Helper()
	c := &collector{got: map[build.ID]build.Outcome{}, calls: map[build.ID]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- e.ex.Watch(ctx, func(ctx context.Context, o build.Outcome) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.got[o.BuildID] = o
			c.calls[o.BuildID]++
			if c.fail {
				return errors.New("store unavailable")
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v, want nil", err)
		}
	})
	return c
}

// outcome waits for the build's outcome.
func (c *collector) outcome(t *testing.T, id build.ID) build.Outcome {
	t.Helper()
	var o build.Outcome
	waitFor(t, "outcome of "+string(id), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		var ok bool
		o, ok = c.got[id]
		return ok
	})
	return o
}

func (c *collector) callCount(id build.ID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitLog waits until the build's live log contains s.
func (e env) waitLog(t *testing.T, id build.ID, s string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%q in the live log", s), func() bool {
		rc, err := e.ex.OpenLiveLog(id)
		if err != nil {
			return false
		}
		defer rc.Close()
		data, _ := io.ReadAll(rc)
		return strings.Contains(string(data), s)
	})
}

func (e env) readBlob(t *testing.T, key string) []byte {
	t.Helper()
	rc, err := e.blobs.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%s): %v", key, err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", key, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return data
}

func tarFiles(t *testing.T, data []byte) map[string]string {
	t.Helper()
	tr := tar.NewReader(strings.NewReader(string(data)))
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("artifacts are not a tarball: %v", err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(data))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// gone reports whether pid no longer runs (a zombie counts as gone).
func gone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[0] == "Z" || f[0] == "X"
}

func intp(i int) *int { return &i }

func TestBuildOutcomes(t *testing.T) {
	t.Parallel()
	scripts := fakeScripts{
		"ok":      `echo "building $PROJECT_KEY $BRANCH_TO_BUILD"; echo artifact > "$BUILD_ARTIFACTS/out.txt"`,
		"failing": `echo about to fail >&2; exit 3`,
		"slow":    `echo ready; sleep 60`,
	}
	tests := []struct {
		project    string
		timeout    time.Duration
		wantStatus build.Status
		wantCode   *int
		wantReason string
		wantLog    string // "" = no log uploaded
	}{
		{"ok", time.Minute, build.StatusSucceeded, intp(0), "", "building acme/ok main\n"},
		{"failing", time.Minute, build.StatusFailed, intp(3), "exit code 3", "about to fail\ndecap: build.sh exited with code 3 after "},
		{"slow", time.Second, build.StatusTimedOut, intp(143), "deadline of 1s exceeded", "ready\ndecap: deadline of 1s exceeded"},
		{"missing", time.Minute, build.StatusErrored, nil, "build.sh not found at acme/missing/build.sh", "decap: build.sh not found at acme/missing/build.sh\n"},
		{"broken", time.Minute, build.StatusErrored, nil, "export build scripts: commit abc123 has no acme/broken", ""},
	}
	e := newEnv(t, scripts, time.Minute)
	c := e.watch(t)
	for _, tt := range tests {
		t.Run(tt.project, func(t *testing.T) {
			t.Parallel()
			job := newJob(tt.project, tt.timeout)
			id := job.Request.BuildID
			if err := e.ex.Launch(t.Context(), job); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			o := c.outcome(t, id)
			if o.Status != tt.wantStatus || o.Reason != tt.wantReason {
				t.Errorf("outcome = %s %q, want %s %q", o.Status, o.Reason, tt.wantStatus, tt.wantReason)
			}
			if fmt.Sprint(deref(o.ExitCode)) != fmt.Sprint(deref(tt.wantCode)) {
				t.Errorf("exit code = %v, want %v", deref(o.ExitCode), deref(tt.wantCode))
			}
			if o.PodName != id.PodName() || o.LockKey() != "acme/"+tt.project+"/main" {
				t.Errorf("outcome names = %q %q, want %q %q", o.PodName, o.LockKey(), id.PodName(), "acme/"+tt.project+"/main")
			}
			if o.StartedAt.IsZero() || o.FinishedAt.Before(o.StartedAt) {
				t.Errorf("outcome times = %v .. %v", o.StartedAt, o.FinishedAt)
			}
			live, err := e.ex.OpenLiveLog(id)
			if err != nil {
				t.Fatalf("OpenLiveLog: %v", err)
			}
			liveData, _ := io.ReadAll(live)
			live.Close()
			if tt.wantLog == "" {
				if o.LogKey != "" || o.ArtifactsKey != "" {
					t.Errorf("keys = %q %q, want none", o.LogKey, o.ArtifactsKey)
				}
				if !strings.Contains(string(liveData), tt.wantReason) {
					t.Errorf("live log %q lacks the reason", liveData)
				}
				return
			}
			if o.LogKey != build.LogKey(id) || o.ArtifactsKey != build.ArtifactsKey(id) {
				t.Fatalf("keys = %q %q, want both", o.LogKey, o.ArtifactsKey)
			}
			log := e.readBlob(t, o.LogKey)
			if !strings.Contains(string(log), tt.wantLog) {
				t.Errorf("stored log lacks %q:\n%s", tt.wantLog, log)
			}
			if string(liveData) != string(log) {
				t.Errorf("live log differs from stored log:\n%s\nvs\n%s", liveData, log)
			}
			files := tarFiles(t, e.readBlob(t, o.ArtifactsKey))
			if tt.project == "ok" && files["out.txt"] != "artifact\n" {
				t.Errorf("artifacts = %v, want out.txt", files)
			}
		})
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// Cancel stops the build and everything it started.
func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"long": `sleep 300 & echo $! > "$HOME/grandchild"; echo ready; wait`}, time.Minute)
	c := e.watch(t)
	job := newJob("long", time.Hour)
	id := job.Request.BuildID
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	e.waitLog(t, id, "ready")
	running, err := e.ex.Running(t.Context())
	if err != nil || len(running) != 1 || running[0] != id {
		t.Errorf("Running = %v, %v; want [%s]", running, err, id)
	}
	if err := e.ex.Remove(t.Context(), id); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Remove of a running build: error %v, want ErrConflict", err)
	}
	if err := e.ex.Cancel(t.Context(), id); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	o := c.outcome(t, id)
	if o.Status != build.StatusCancelled || o.Reason != "cancelled" || o.LogKey == "" {
		t.Errorf("outcome = %+v, want cancelled with a log", o)
	}
	if log := e.readBlob(t, o.LogKey); !strings.Contains(string(log), "decap: build cancelled") {
		t.Errorf("log lacks the cancel footer:\n%s", log)
	}
	grandchild := readPID(t, filepath.Join(e.dir(id), localexec.HomeDir, "grandchild"))
	waitFor(t, "the script's background process to end", func() bool { return gone(grandchild) })

	if err := e.ex.Cancel(t.Context(), id); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of an ended build: error %v, want ErrNotFound", err)
	}
	if err := e.ex.Cancel(t.Context(), build.NewID(time.Now())); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of an unknown build: error %v, want ErrNotFound", err)
	}
	if running, _ := e.ex.Running(t.Context()); len(running) != 0 {
		t.Errorf("Running after the end = %v, want none", running)
	}
}

// Launching a build again, even concurrently, runs it once.
func TestLaunchIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	counter := filepath.Join(e.tmp, "runs")
	shareFile(t, counter)
	e.ex, _ = localexec.New(localexec.Config{
		RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts:      fakeScripts{"once": fmt.Sprintf("echo run >> %q; sleep 1", counter)},
		PollInterval: 50 * time.Millisecond,
	})
	c := e.watch(t)
	job := newJob("once", time.Minute)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := e.ex.Launch(t.Context(), job); err != nil {
				t.Errorf("Launch: %v", err)
			}
		})
	}
	wg.Wait()
	if o := c.outcome(t, job.Request.BuildID); o.Status != build.StatusSucceeded {
		t.Errorf("outcome = %+v, want succeeded", o)
	}
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Errorf("Launch after the end: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	data, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "run"); n != 1 {
		t.Errorf("build.sh ran %d times, want 1", n)
	}
}

// Builds that end while nobody watches are reported when Watch starts, and
// again on every scan until they are removed.
func TestWatchReconciles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"ok": "echo fine", "failing": "exit 1"}, time.Minute)
	jobs := []build.Job{newJob("ok", time.Minute), newJob("failing", time.Minute)}
	for _, job := range jobs {
		if err := e.ex.Launch(t.Context(), job); err != nil {
			t.Fatalf("Launch: %v", err)
		}
	}
	for _, job := range jobs {
		waitFor(t, "result.json", func() bool {
			_, err := os.Stat(filepath.Join(e.dir(job.Request.BuildID), localexec.ResultFile))
			return err == nil
		})
	}
	c := e.watch(t)
	c.mu.Lock()
	c.fail = true
	c.mu.Unlock()
	ok, failing := jobs[0].Request.BuildID, jobs[1].Request.BuildID
	if o := c.outcome(t, ok); o.Status != build.StatusSucceeded {
		t.Errorf("outcome of ok = %+v, want succeeded", o)
	}
	if o := c.outcome(t, failing); o.Status != build.StatusFailed || deref(o.ExitCode) != 1 {
		t.Errorf("outcome of failing = %+v, want failed with exit code 1", o)
	}
	// handle failed: the outcome comes again; once removed, no more.
	waitFor(t, "a second report", func() bool { return c.callCount(ok) >= 2 })
	if err := e.ex.Remove(t.Context(), ok); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := e.ex.Remove(t.Context(), ok); err != nil {
		t.Errorf("Remove again: %v, want nil", err)
	}
	if _, err := e.ex.OpenLiveLog(ok); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("OpenLiveLog after Remove: error %v, want ErrNotFound", err)
	}
	n := c.callCount(ok)
	before := c.callCount(failing)
	waitFor(t, "more scans", func() bool { return c.callCount(failing) >= before+3 })
	if got := c.callCount(ok); got != n {
		t.Errorf("removed build reported %d more times", got-n)
	}
}

// A killed entrypoint leaves no result: the build is errored and what is
// left of its script is stopped.
func TestEntrypointKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeScripts{"victim": `sleep 300 & echo $! > "$HOME/child"; echo ready; wait`}, time.Minute)
	job := newJob("victim", time.Hour)
	id := job.Request.BuildID
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	e.waitLog(t, id, "ready")
	if err := syscall.Kill(readPID(t, filepath.Join(e.dir(id), "pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := e.watch(t)
	o := c.outcome(t, id)
	if o.Status != build.StatusErrored || o.Reason != localexec.ReasonNoResult || o.LockKey() != "acme/victim/main" {
		t.Errorf("outcome = %+v, want errored %q", o, localexec.ReasonNoResult)
	}
	child := readPID(t, filepath.Join(e.dir(id), localexec.HomeDir, "child"))
	waitFor(t, "the orphaned script to be stopped", func() bool { return gone(child) })
	// The made-up result is kept: the next report is the same.
	first := o
	waitFor(t, "a second report", func() bool { return c.callCount(id) >= 2 })
	if o := c.outcome(t, id); o.FinishedAt != first.FinishedAt {
		t.Errorf("second report finished at %v, first at %v", o.FinishedAt, first.FinishedAt)
	}
}

// A launch interrupted before the process started is completed by the next
// Launch, or, after the launch grace, reported as errored.
func TestInterruptedLaunch(t *testing.T) {
	t.Parallel()
	scripts := fakeScripts{"ok": "echo fine"}
	interrupt := func(t *testing.T, e env, job build.Job) {
		t.Helper()
		// What a launcher that died after mkdir leaves.
		if err := os.MkdirAll(filepath.Join(e.dir(job.Request.BuildID), "scripts", "acme"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("completed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, scripts, time.Minute)
		c := e.watch(t)
		job := newJob("ok", time.Minute)
		interrupt(t, e, job)
		if err := e.ex.Launch(t.Context(), job); err != nil {
			t.Fatalf("Launch: %v", err)
		}
		if o := c.outcome(t, job.Request.BuildID); o.Status != build.StatusSucceeded {
			t.Errorf("outcome = %+v, want succeeded", o)
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, scripts, 300*time.Millisecond)
		job := newJob("ok", time.Minute)
		interrupt(t, e, job)
		c := e.watch(t)
		o := c.outcome(t, job.Request.BuildID)
		if o.Status != build.StatusErrored || o.Reason != localexec.ReasonLaunchInterrupted {
			t.Errorf("outcome = %+v, want errored %q", o, localexec.ReasonLaunchInterrupted)
		}
		// A late Launch finds the build ended and starts nothing.
		if err := e.ex.Launch(t.Context(), job); err != nil {
			t.Fatalf("late Launch: %v", err)
		}
		if _, err := os.Stat(filepath.Join(e.dir(job.Request.BuildID), "pid")); err == nil {
			t.Error("a late Launch started the abandoned build")
		}
	})
}

func TestInvalidIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	bad := build.ID("../../etc")
	if err := e.ex.Cancel(t.Context(), bad); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Cancel: error %v, want ErrInvalid", err)
	}
	if err := e.ex.Remove(t.Context(), bad); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Remove: error %v, want ErrInvalid", err)
	}
	if _, err := e.ex.OpenLiveLog(bad); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("OpenLiveLog: error %v, want ErrInvalid", err)
	}
	job := newJob("ok", time.Minute)
	job.Request.Team = ".."
	if err := e.ex.Launch(t.Context(), job); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Launch with team \"..\": error %v, want ErrInvalid", err)
	}
	if _, err := e.ex.OpenLiveLog(build.NewID(time.Now())); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("OpenLiveLog of an unknown build: error %v, want ErrNotFound", err)
	}
}

// TestPresignedUploads runs a build that uploads over HTTP to presigned
// URLs, as it does when the blob store is S3: its log, the log's line
// times (also kept live in its directory) and its artifacts.
func TestPresignedUploads(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	got := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Query().Get("sig") != "s3cr3t" {
			http.Error(w, "denied", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = body
		mu.Unlock()
	}))
	defer srv.Close()
	tmp := buildTempDir(t)
	var gotTTL time.Duration
	ex, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(tmp, "run"), EntrypointPath: entrypointPath, PollInterval: 50 * time.Millisecond,
		Scripts: fakeScripts{"up": "echo uploaded-over-http; echo x > \"$BUILD_ARTIFACTS/a.txt\""},
		Uploads: func(_ context.Context, id build.ID, ttl time.Duration) (map[string]string, error) {
			gotTTL = ttl
			return map[string]string{
				build.LogKey(id):       srv.URL + "/" + build.LogKey(id) + "?sig=s3cr3t",
				build.LogTimesKey(id):  srv.URL + "/" + build.LogTimesKey(id) + "?sig=s3cr3t",
				build.ArtifactsKey(id): srv.URL + "/" + build.ArtifactsKey(id) + "?sig=s3cr3t",
			}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := env{ex: ex, run: filepath.Join(tmp, "run"), tmp: tmp}
	c := e.watch(t)
	job := newJob("up", time.Minute)
	if err := ex.Launch(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	o := c.outcome(t, job.Request.BuildID)
	if o.Status != build.StatusSucceeded || o.LogKey == "" || o.ArtifactsKey == "" {
		t.Fatalf("outcome %+v, want succeeded with both objects", o)
	}
	if want := time.Minute + build.UploadGrace; gotTTL != want {
		t.Errorf("presigned for %v, want the build's timeout plus build.UploadGrace, %v", gotTTL, want)
	}
	mu.Lock()
	logGz := got["/"+build.LogKey(job.Request.BuildID)]
	mu.Unlock()
	zr, err := gzip.NewReader(bytes.NewReader(logGz))
	if err != nil {
		t.Fatalf("uploaded log is not gzip: %v", err)
	}
	text, _ := io.ReadAll(zr)
	if !strings.Contains(string(text), "uploaded-over-http") {
		t.Errorf("uploaded log = %q", text)
	}
	mu.Lock()
	timesGz := got["/"+build.LogTimesKey(job.Request.BuildID)]
	mu.Unlock()
	var times build.LogTimes // line 1 has the first pair, 0 ms or a few after the start
	if zr, err := gzip.NewReader(bytes.NewReader(timesGz)); err != nil {
		t.Errorf("uploaded line times are not gzip: %v", err)
	} else if err := json.NewDecoder(zr).Decode(&times); err != nil || times.Validate() != nil ||
		times.Lines != int64(strings.Count(string(text), "\n")) || len(times.Times) == 0 || times.Times[0][0] != 1 || times.Times[0][1] > 5000 {
		t.Errorf("uploaded line times %+v (%v), want an index of the log's %d lines", times, err, strings.Count(string(text), "\n"))
	}
	f, err := ex.OpenLiveTimes(job.Request.BuildID)
	if err != nil {
		t.Fatalf("OpenLiveTimes: %v", err)
	}
	var live build.LogTimes
	err = json.NewDecoder(f).Decode(&live)
	f.Close()
	if err != nil || live.Lines != times.Lines {
		t.Errorf("live line times %+v (%v), want the uploaded ones, %+v", live, err, times)
	}
	if _, err := ex.OpenLiveTimes(build.NewID(time.Now())); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("OpenLiveTimes of an unknown build: error %v, want ErrNotFound", err)
	}
	info, err := os.Stat(filepath.Join(e.dir(job.Request.BuildID), localexec.UploadsFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("uploads.json: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
}

// TestUploadGrantsExpireWithTheDeadline: a build's presigned upload URLs
// are asked for its deadline (the job's timeout, or else its descriptor's)
// plus build.UploadGrace, not longer.
func TestUploadGrantsExpireWithTheDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		timeout    time.Duration
		descriptor int // buildTimeoutSeconds
		want       time.Duration
	}{
		{"job timeout", 10 * time.Minute, 0, 10*time.Minute + build.UploadGrace},
		{"descriptor timeout", 0, 7200, 2*time.Hour + build.UploadGrace},
		{"default timeout", 0, 0, build.DefaultBuildTimeout + build.UploadGrace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmp := buildTempDir(t)
			stop := errors.New("presign refused (test)")
			var got time.Duration
			ex, err := localexec.New(localexec.Config{
				RunDir: filepath.Join(tmp, "run"), EntrypointPath: entrypointPath,
				Scripts: fakeScripts{"up": "echo never"},
				Uploads: func(_ context.Context, _ build.ID, ttl time.Duration) (map[string]string, error) {
					got = ttl
					return nil, stop
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			job := newJob("up", tc.timeout)
			job.Descriptor.TimeoutSeconds = tc.descriptor
			if err := ex.Launch(t.Context(), job); !errors.Is(err, stop) {
				t.Fatalf("Launch: %v, want the presign error", err)
			}
			if got != tc.want {
				t.Errorf("presigned for %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRemovedBuildNeverRunsAgain: a late redelivery of a request whose
// build ended and was removed must not start it again, and a removal that a
// crash interrupted is finished, not taken for an interrupted launch.
func TestRemovedBuildNeverRunsAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	counter := filepath.Join(e.tmp, "runs")
	shareFile(t, counter)
	cfg := localexec.Config{
		RunDir: e.run, BlobsDir: filepath.Join(e.tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts:      fakeScripts{"once": fmt.Sprintf("echo run >> %q", counter)},
		PollInterval: 50 * time.Millisecond, LaunchGrace: 100 * time.Millisecond,
	}
	e.ex, _ = localexec.New(cfg)
	c := e.watch(t)
	job := newJob("once", time.Minute)
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome(t, job.Request.BuildID); o.Status != build.StatusSucceeded {
		t.Fatalf("outcome = %+v, want succeeded", o)
	}
	if err := e.ex.Remove(t.Context(), job.Request.BuildID); err != nil {
		t.Fatal(err)
	}
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch after Remove: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if data, _ := os.ReadFile(counter); strings.Count(string(data), "run") != 1 {
		t.Errorf("build.sh ran %d times, want 1", strings.Count(string(data), "run"))
	}
	if ids, _ := e.ex.Present(t.Context()); len(ids) != 0 {
		t.Errorf("present after Remove and a late Launch: %v", ids)
	}

	// A removal interrupted after its rename: a new Executor finishes it.
	half := filepath.Join(e.run, ".removing-build-"+string(build.NewID(time.Now())))
	if err := os.MkdirAll(filepath.Join(half, "workspace"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := localexec.New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("interrupted removal left %s: %v", half, err)
	}
}
