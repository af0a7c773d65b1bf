package entrypoint_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

const testID = build.ID("0190b2a4-8d3e-7c1a-9f00-0123456789ab")

// memUploader is an in-memory Uploader whose keys can be made to fail.
type memUploader struct {
	mu      sync.Mutex
	objects map[string][]byte
	calls   map[string]int
	// failFirst fails the first n Puts of a key; -1 fails them all.
	failFirst map[string]int
}

func newMemUploader() *memUploader {
	return &memUploader{objects: map[string][]byte{}, calls: map[string]int{}, failFirst: map[string]int{}}
}

func (m *memUploader) Put(ctx context.Context, key string, r io.Reader) error {
	data, err := io.ReadAll(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[key]++
	if err != nil {
		return err
	}
	if n := m.failFirst[key]; n < 0 || m.calls[key] <= n {
		return errors.New("service unavailable")
	}
	m.objects[key] = data
	return nil
}

func (m *memUploader) get(t *testing.T, key string) []byte {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.objects[key]
	if !ok {
		t.Fatalf("object %s was not uploaded", key)
	}
	return data
}

func (m *memUploader) gunzip(t *testing.T, key string) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(m.get(t, key)))
	if err != nil {
		t.Fatalf("object %s is not gzip: %v", key, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	return string(data)
}

// tarNames lists the entries of the uploaded artifacts tarball, with the
// content of regular files.
func (m *memUploader) tarEntries(t *testing.T) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(m.get(t, build.ArtifactsKey(testID))))
	if err != nil {
		t.Fatalf("artifacts are not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	entries := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatalf("artifacts are not a tarball: %v", err)
		}
		data, _ := io.ReadAll(tr)
		entries[h.Name] = string(data)
	}
}

// setup writes build.sh for acme/widget and returns a Config for it.
func setup(t *testing.T, script string) (entrypoint.Config, *memUploader) {
	t.Helper()
	dir := t.TempDir()
	scripts := filepath.Join(dir, "scripts")
	if err := os.MkdirAll(scripts, 0o755); err != nil {
		t.Fatal(err)
	}
	if script != "" {
		p := filepath.Join(scripts, "acme", "widget", "build.sh")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	up := newMemUploader()
	return entrypoint.Config{
		ScriptsDir:    scripts,
		Team:          "acme",
		Project:       "widget",
		Ref:           "feature/x",
		SHA:           "0123456789abcdef0123456789abcdef01234567",
		BuildID:       testID,
		Workspace:     filepath.Join(dir, "workspace"),
		ArtifactsDir:  filepath.Join(dir, "artifacts"),
		LiveLog:       filepath.Join(dir, "console.log"),
		Timeout:       time.Minute,
		Uploader:      up,
		Env:           []string{"PATH=" + os.Getenv("PATH"), "BASE_VAR=kept", "BUILD_ID=overridden"},
		KillGrace:     time.Second,
		UploadBackoff: 10 * time.Millisecond,
	}, up
}

func TestRunSucceeded(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, `
echo "out 1"
echo "err 2" >&2
echo "out 3"
echo "env $BUILD_ID $PROJECT_KEY $BRANCH_TO_BUILD $COMMIT_SHA $BASE_VAR"
echo "cwd $(pwd)"
mkdir -p "$BUILD_ARTIFACTS/dist/empty"
echo hello > "$BUILD_ARTIFACTS/dist/hello.txt"
ln -s /etc/passwd "$BUILD_ARTIFACTS/dist/link"
printf 'no newline at end'
`)
	var stdout bytes.Buffer
	cfg.Stdout = &stdout
	res := entrypoint.Run(t.Context(), cfg)

	if res.Status != build.StatusSucceeded || res.ExitCode == nil || *res.ExitCode != 0 || res.Reason != "" {
		t.Fatalf("Run = %+v, want succeeded with exit code 0 and no reason", res)
	}
	if res.LogKey != build.LogKey(testID) || res.ArtifactsKey != build.ArtifactsKey(testID) {
		t.Errorf("keys = %q, %q; want %q, %q", res.LogKey, res.ArtifactsKey, build.LogKey(testID), build.ArtifactsKey(testID))
	}
	if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("StartedAt %v, FinishedAt %v: want a time range", res.StartedAt, res.FinishedAt)
	}
	log := up.gunzip(t, build.LogKey(testID))
	wantInOrder := []string{
		"decap: build " + string(testID) + " of acme/widget feature/x at 0123456789abcdef",
		"out 1\nerr 2\nout 3\n",
		fmt.Sprintf("env %s acme/widget feature/x 0123456789abcdef0123456789abcdef01234567 kept\n", testID),
		"cwd " + cfg.Workspace + "\n",
		"no newline at end\ndecap: build.sh exited with code 0 after ",
		"decap: 1 artifact(s) were left out",
	}
	rest := log
	for _, want := range wantInOrder {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("console log lacks %q (in order); log:\n%s", want, log)
		}
		rest = rest[i+len(want):]
	}
	live, err := os.ReadFile(cfg.LiveLog)
	if err != nil {
		t.Fatal(err)
	}
	if string(live) != log {
		t.Errorf("live log differs from uploaded log:\n%s\nvs\n%s", live, log)
	}
	if !strings.HasPrefix(log, stdout.String()[:40]) || !strings.Contains(stdout.String(), "out 3") {
		t.Errorf("stdout tee = %q, want the console log", stdout.String())
	}

	got := up.tarEntries(t)
	want := map[string]string{"dist/": "", "dist/empty/": "", "dist/hello.txt": "hello\n"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("artifacts tarball = %v, want %v", got, want)
	}
}

func TestRunEndings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		script     string
		timeout    time.Duration
		cancel     bool // cancel once the script printed "ready"
		wantStatus build.Status
		wantCode   int // -1: no exit code
		wantReason string
		wantFooter string
	}{
		{
			name:       "failed",
			script:     "echo failing; exit 3",
			wantStatus: build.StatusFailed,
			wantCode:   3,
			wantReason: "exit code 3",
			wantFooter: "decap: build.sh exited with code 3 after ",
		},
		{
			name:       "killed by a signal",
			script:     "kill -KILL $$",
			wantStatus: build.StatusFailed,
			wantCode:   137,
			wantReason: "killed by signal 9 (killed)",
			wantFooter: "decap: build.sh was killed by signal 9 (killed) after ",
		},
		{
			name:       "timed out",
			script:     "echo ready; sleep 60",
			timeout:    300 * time.Millisecond,
			wantStatus: build.StatusTimedOut,
			wantCode:   143,
			wantReason: "deadline of 300ms exceeded",
			wantFooter: "decap: deadline of 300ms exceeded; build.sh stopped after ",
		},
		{
			name:       "cancelled",
			script:     "echo ready; sleep 60",
			cancel:     true,
			wantStatus: build.StatusCancelled,
			wantCode:   143,
			wantReason: "cancelled",
			wantFooter: "decap: build cancelled; build.sh stopped after ",
		},
		{
			name:       "cancelled, ignoring SIGTERM",
			script:     "trap '' TERM; echo ready; while :; do sleep 0.1; done",
			cancel:     true,
			wantStatus: build.StatusCancelled,
			wantCode:   137,
			wantReason: "cancelled",
			wantFooter: "decap: build cancelled; build.sh stopped after ",
		},
		{
			name:       "no build.sh",
			wantStatus: build.StatusErrored,
			wantCode:   -1,
			wantReason: "build.sh not found at acme/widget/build.sh",
			wantFooter: "decap: build.sh not found at acme/widget/build.sh",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, up := setup(t, tt.script)
			if tt.timeout > 0 {
				cfg.Timeout = tt.timeout
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				go func() {
					waitFor(t, func() bool {
						data, _ := os.ReadFile(cfg.LiveLog)
						return strings.Contains(string(data), "ready")
					})
					cancel()
				}()
			}
			res := entrypoint.Run(ctx, cfg)
			if res.Status != tt.wantStatus || res.Reason != tt.wantReason {
				t.Errorf("Run = %s %q, want %s %q", res.Status, res.Reason, tt.wantStatus, tt.wantReason)
			}
			switch {
			case tt.wantCode < 0 && res.ExitCode != nil:
				t.Errorf("exit code = %d, want none", *res.ExitCode)
			case tt.wantCode >= 0 && (res.ExitCode == nil || *res.ExitCode != tt.wantCode):
				t.Errorf("exit code = %v, want %d", fmtCode(res.ExitCode), tt.wantCode)
			}
			if res.LogKey == "" || res.ArtifactsKey == "" {
				t.Errorf("keys = %q, %q; want both uploaded", res.LogKey, res.ArtifactsKey)
			}
			if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "\n"+tt.wantFooter) {
				t.Errorf("console log lacks footer %q:\n%s", tt.wantFooter, log)
			}
			if got := up.tarEntries(t); len(got) != 0 {
				t.Errorf("artifacts = %v, want an empty tarball", got)
			}
		})
	}
}

// The script's whole process group goes when it is stopped or ends: no
// background process outlives the build.
func TestRunKillsProcessGroup(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		script string
		cancel bool
	}{
		{name: "cancelled", script: "sleep 300 & echo $! > ../grandchild; echo ready; wait", cancel: true},
		{name: "exited", script: "sleep 300 & echo $! > ../grandchild; echo ready; exit 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, _ := setup(t, tt.script)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				go func() {
					waitFor(t, func() bool {
						data, _ := os.ReadFile(cfg.LiveLog)
						return strings.Contains(string(data), "ready")
					})
					cancel()
				}()
			}
			start := time.Now()
			res := entrypoint.Run(ctx, cfg)
			if time.Since(start) > 30*time.Second {
				t.Errorf("Run took %v: it waited for the background process", time.Since(start))
			}
			if tt.cancel && res.Status != build.StatusCancelled || !tt.cancel && res.Status != build.StatusSucceeded {
				t.Errorf("Run = %+v", res)
			}
			data, err := os.ReadFile(filepath.Join(cfg.Workspace, "..", "grandchild"))
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return !processAlive(pid) })
		})
	}
}

func TestRunErrored(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		change     func(*entrypoint.Config)
		wantReason string
		wantLog    bool
	}{
		{
			name:       "scripts checkout missing",
			change:     func(c *entrypoint.Config) { c.ScriptsDir = filepath.Join(c.ScriptsDir, "nope") },
			wantReason: "build scripts checkout is missing",
			wantLog:    true,
		},
		{
			name:       "team escapes the checkout",
			change:     func(c *entrypoint.Config) { c.Team = ".." },
			wantReason: `invalid: team ".." starts with "."`,
			wantLog:    true,
		},
		{
			name:       "project with a slash",
			change:     func(c *entrypoint.Config) { c.Project = "a/b" },
			wantReason: `invalid: project "a/b" contains '/'`,
			wantLog:    true,
		},
		{
			name:       "build.sh is a directory",
			change:     func(c *entrypoint.Config) { c.Project = "dir" },
			wantReason: "build.sh at acme/dir/build.sh is not a regular file",
			wantLog:    true,
		},
		{
			name:       "invalid build ID",
			change:     func(c *entrypoint.Config) { c.BuildID = "../x" },
			wantReason: `invalid: build id "../x" is not a UUID`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, up := setup(t, "echo should not run > ../ran")
			if err := os.MkdirAll(filepath.Join(cfg.ScriptsDir, "acme", "dir", "build.sh"), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.change(&cfg)
			res := entrypoint.Run(t.Context(), cfg)
			if res.Status != build.StatusErrored || res.Reason != tt.wantReason || res.ExitCode != nil {
				t.Errorf("Run = %s %q exit %s, want errored %q without exit code", res.Status, res.Reason, fmtCode(res.ExitCode), tt.wantReason)
			}
			if _, err := os.Stat(filepath.Join(cfg.Workspace, "..", "ran")); err == nil {
				t.Error("the script ran")
			}
			if !tt.wantLog {
				if len(up.objects) != 0 {
					t.Errorf("uploaded %d objects, want none", len(up.objects))
				}
				return
			}
			if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "decap: "+tt.wantReason+"\n") {
				t.Errorf("console log lacks the reason:\n%s", log)
			}
		})
	}
}

func TestRunUploadRetries(t *testing.T) {
	t.Parallel()
	script := `echo hi > "$BUILD_ARTIFACTS/a.txt"; echo built`
	t.Run("recovers", func(t *testing.T) {
		t.Parallel()
		cfg, up := setup(t, script)
		up.failFirst[build.LogKey(testID)] = 2
		up.failFirst[build.ArtifactsKey(testID)] = 1
		res := entrypoint.Run(t.Context(), cfg)
		if res.Status != build.StatusSucceeded || res.LogKey == "" || res.ArtifactsKey == "" || res.Reason != "" {
			t.Errorf("Run = %+v, want succeeded with both keys", res)
		}
		if got := up.tarEntries(t); got["a.txt"] != "hi\n" {
			t.Errorf("artifacts = %v, want a.txt", got)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		t.Parallel()
		cfg, up := setup(t, script)
		up.failFirst[build.ArtifactsKey(testID)] = -1
		res := entrypoint.Run(t.Context(), cfg)
		want := "upload artifacts: service unavailable (after 3 attempts)"
		if res.Status != build.StatusErrored || res.Reason != want || res.ArtifactsKey != "" || res.LogKey == "" {
			t.Errorf("Run = %+v, want errored %q with only the log key", res, want)
		}
		if n := up.calls[build.ArtifactsKey(testID)]; n != 3 {
			t.Errorf("artifacts upload tried %d times, want 3", n)
		}
		if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "decap: upload artifacts failed: "+strings.TrimPrefix(want, "upload artifacts: ")) {
			t.Errorf("console log does not report the failed upload:\n%s", log)
		}
	})
	t.Run("failed script keeps its status", func(t *testing.T) {
		t.Parallel()
		cfg, up := setup(t, "exit 4")
		up.failFirst[build.LogKey(testID)] = -1
		res := entrypoint.Run(t.Context(), cfg)
		want := "exit code 4; upload log: service unavailable (after 3 attempts)"
		if res.Status != build.StatusFailed || res.Reason != want || res.LogKey != "" || res.ArtifactsKey == "" {
			t.Errorf("Run = %+v, want failed %q with only the artifacts key", res, want)
		}
	})
}

// Without a live log the console still reaches the uploaded object.
func TestRunWithoutLiveLog(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, "echo only here")
	cfg.LiveLog = ""
	res := entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded {
		t.Fatalf("Run = %+v", res)
	}
	if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "only here\n") {
		t.Errorf("console log = %q", log)
	}
}

func fmtCode(c *int) string {
	if c == nil {
		return "none"
	}
	return strconv.Itoa(*c)
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("condition not met within 20s")
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive reports whether pid runs; a zombie does not.
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	fields := strings.Fields(string(data[i+1:]))
	return len(fields) > 0 && !slices.Contains([]string{"Z", "X"}, fields[0])
}

// TestScriptInheritsNoDescriptors: build.sh gets its standard input,
// output and error and nothing else of this process, not even a
// descriptor it inherited without close-on-exec (from whatever started
// the services: a wrapper's log file, a supervisor's pipe).
func TestScriptInheritsNoDescriptors(t *testing.T) {
	t.Parallel()
	leaked, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leaked)
	// ls, not a command substitution: bash would hold the substitution's
	// pipe meanwhile.
	cfg, up := setup(t, "echo fds:\nls -1 /proc/$$/fd\necho :fds\n")
	if res := entrypoint.Run(t.Context(), cfg); res.Status != build.StatusSucceeded {
		t.Fatalf("Run = %+v, want succeeded", res)
	}
	log := up.gunzip(t, build.LogKey(testID))
	_, list, _ := strings.Cut(log, "fds:\n")
	list, _, _ = strings.Cut(list, ":fds")
	for _, fd := range strings.Fields(list) {
		n, err := strconv.Atoi(fd)
		if err != nil {
			t.Fatalf("descriptor %q in the list:\n%s", fd, log)
		}
		// 0-2, and 255: bash's own descriptor of build.sh.
		if n > 2 && n != 255 {
			t.Errorf("build.sh has descriptor %d, want only 0, 1, 2 (and bash's 255)", n)
		}
	}
}
