package backend_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/catalog"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/localexec"
)

func TestKubernetesExecutorNeedsTheAWSBackend(t *testing.T) {
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"DECAP_EXECUTOR": "kubernetes", "DECAP_DATA_DIR": t.TempDir(), "DECAP_BUILD_SCRIPTS": "https://github.com/example/build-scripts.git"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.Open(t.Context(), cfg, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.OpenExecutor(time.Now)
	if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), "DECAP_BACKEND=aws") {
		t.Fatalf("OpenExecutor: got %v, want ErrInvalid saying the kubernetes executor needs DECAP_BACKEND=aws", err)
	}
}

func TestCancelRequestsMarksOnlyRunningBuilds(t *testing.T) {
	records := buildtest.NewRecords()
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	c := backend.CancelRequests{Records: records, Now: func() time.Time { return now }}
	save := func(status build.Status) build.Record {
		r := build.Record{BuildID: build.NewID(now), Team: "t", Project: "p", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerPush, Status: status, QueuedAt: now}
		if status.Final() {
			r.FinishedAt = now
		}
		if err := records.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	running := save(build.StatusRunning)
	if err := c.Cancel(t.Context(), running.BuildID); err != nil {
		t.Fatalf("Cancel of a running build: %v", err)
	}
	got, err := records.Get(t.Context(), running.BuildID)
	if err != nil || !got.CancelRequestedAt.Equal(now) || got.Status != build.StatusRunning {
		t.Fatalf("record after Cancel: got %+v, %v; want still running with CancelRequestedAt %s", got, err, now)
	}
	if err := c.Cancel(t.Context(), running.BuildID); err != nil {
		t.Errorf("a second Cancel: %v, want nil", err)
	}
	for _, status := range []build.Status{build.StatusQueued, build.StatusSucceeded} {
		r := save(status)
		if err := c.Cancel(t.Context(), r.BuildID); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Cancel of a %s build: got %v, want ErrNotFound", status, err)
		}
	}
	if err := c.Cancel(t.Context(), build.NewID(now)); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of an unknown build: got %v, want ErrNotFound", err)
	}
}

// A data directory under a directory closed to other users (a checkout
// under /root, 0700) cannot hold the run directory when builds run under
// users of their own: they could not reach their own directories. The
// executor then runs them in a directory of the machine's, keeps the data
// directory closed (0700), and every service of the installation agrees
// on where.
func TestRunDirOutsideAClosedDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: without it builds run as the services' user, and the run directory is always in the data directory")
	}
	closed := t.TempDir() // 0700, as is its parent
	data := filepath.Join(closed, "data")
	entrypoint := filepath.Join(closed, "decap-entrypoint")
	if err := os.WriteFile(entrypoint, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	open := func() (*backend.Set, backend.Executor) {
		t.Helper()
		cfg, err := config.Load(func(k string) string {
			return map[string]string{"DECAP_DATA_DIR": data, "DECAP_ENTRYPOINT": entrypoint,
				"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts")}[k]
		})
		if err != nil {
			t.Fatal(err)
		}
		b, err := backend.Open(t.Context(), cfg, slog.New(slog.DiscardHandler), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		ex, err := b.OpenExecutor(time.Now)
		if err != nil {
			t.Fatalf("OpenExecutor with the data directory under a closed directory: %v", err)
		}
		return b, ex
	}
	open()
	runDir, inside := localexec.RunDirFor(data)
	t.Cleanup(func() { os.RemoveAll(runDir) })
	if inside || !strings.HasPrefix(runDir, localexec.SharedRunRoot+"/") {
		t.Fatalf("RunDirFor(%s) = %s (inside %v), want a directory under %s", data, runDir, inside, localexec.SharedRunRoot)
	}
	if info, err := os.Stat(runDir); err != nil || info.Mode().Perm() != 0o711 {
		t.Errorf("run directory %s: %v, %v; want it created, mode 0711", runDir, info, err)
	}
	if info, err := os.Stat(data); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("data directory: %v, %v; want mode 0700 (no build needs to pass through it)", info, err)
	}
	// Another service of the installation finds the same directory.
	if again, _ := localexec.RunDirFor(data); again != runDir {
		t.Errorf("RunDirFor again: %s, want %s", again, runDir)
	}
	if other, _ := localexec.RunDirFor(filepath.Join(closed, "other")); other == runDir {
		t.Errorf("another data directory got the same run directory %s", other)
	}

	// Opened up, the data directory holds its run directory again.
	if err := os.Chmod(closed, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(closed), 0o711); err != nil {
		t.Fatal(err)
	}
	if dir, inside := localexec.RunDirFor(data); !inside || dir != filepath.Join(data, "run") {
		t.Errorf("RunDirFor with reachable parents = %s (inside %v), want %s", dir, inside, filepath.Join(data, "run"))
	}
}

// The dispatcher's catalog reads the build-scripts repository again before
// it answers that a project is unbuildable or unknown, when its copy is
// older than the request: a project fixed (or added) and refreshed through
// ingest's POST /hooks/buildscripts builds at once. A request made before
// the copy was read is answered from it, without a read.
func TestFreshCatalogRereadsForNewerRequests(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("acme/app/build.sh", "echo hi\n")
	write("acme/app/project.json", `{"buildImage": "x", "bogus": 1}`)
	cat, err := catalog.New(catalog.Config{Source: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	fresh := backend.FreshCatalog(cat, 100*time.Millisecond)
	read := cat.RefreshedAt()

	// Fixed after the catalog was read; a request made before that read is
	// answered from the copy.
	write("acme/app/project.json", `{"buildImage": "x"}`)
	if _, _, err := fresh.LookupAsOf("acme", "app", read.Add(-time.Minute)); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("lookup for a request older than the copy: got %v, want the copy's ErrInvalid", err)
	}
	if got := cat.RefreshedAt(); !got.Equal(read) {
		t.Errorf("the catalog was read again (at %v) for a request older than its copy", got)
	}

	// A request made after the fix is built with it.
	if _, _, err := fresh.LookupAsOf("acme", "app", time.Now()); err != nil {
		t.Errorf("lookup for a request made after the fix: %v, want the fixed project", err)
	}

	// A project added meanwhile is found for a newer request too.
	write("acme/new/build.sh", "echo hi\n")
	write("acme/new/project.json", `{"buildImage": "x"}`)
	if _, _, err := fresh.LookupAsOf("acme", "new", time.Now()); err != nil {
		t.Errorf("lookup of a project added after the last read: %v", err)
	}
	// A request from a clock far ahead reads at most once per minAge.
	if _, _, err := fresh.LookupAsOf("acme", "gone", time.Now().Add(time.Hour)); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("lookup of an unknown project: %v, want ErrNotFound", err)
	}
}
