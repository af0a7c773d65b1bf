package entrypoint_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// buildUID is the user TestRunAsCredential runs its script as: one that
// owns nothing, outside the local executor's default build uids.
const buildUID = 1899999980

// TestRunAsCredential: with a Credential the script runs as that user,
// with no other group, and only its own files are taken into the
// artifacts: not a file of this process's user that it hard-linked there
// (which it could not read, but this process could).
func TestRunAsCredential(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("running the script as another user needs root; run the tests as root (CI does) to test it")
	}
	cfg, up := setup(t, `
echo "uid $(id -u) gid $(id -g) groups $(id -G)"
echo "max user processes $(ulimit -u)"
echo mine > "$BUILD_ARTIFACTS/mine.txt"
cat "$BUILD_ARTIFACTS/linked.txt" && echo "READ the linked secret"
true`)
	dir := filepath.Dir(cfg.Workspace)
	// Reachable by the build user: Go makes the test's directory 0700.
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{cfg.Workspace, cfg.ArtifactsDir} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, buildUID, buildUID); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, filepath.Join(cfg.ArtifactsDir, "linked.txt")); err != nil {
		t.Fatal(err)
	}
	cfg.Credential = &syscall.Credential{Uid: buildUID, Gid: buildUID, Groups: []uint32{}}

	res := entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded {
		t.Fatalf("Run = %+v, want succeeded", res)
	}
	log := up.gunzip(t, build.LogKey(testID))
	id := strconv.Itoa(buildUID)
	if !strings.Contains(log, "uid "+id+" gid "+id+" groups "+id+"\n") {
		t.Errorf("the script did not run as %s with no other group:\n%s", id, log)
	}
	if !strings.Contains(log, "max user processes "+strconv.Itoa(entrypoint.DefaultMaxTasks)+"\n") {
		t.Errorf("the script's user may start more than %d tasks (a fork bomb would reach the machine's limit):\n%s", entrypoint.DefaultMaxTasks, log)
	}
	if strings.Contains(log, "READ") || strings.Contains(log, "s3cr3t") {
		t.Errorf("the script read a file of this process's user:\n%s", log)
	}
	got := up.tarEntries(t)
	if got["mine.txt"] != "mine\n" {
		t.Errorf("artifacts = %v, want the script's mine.txt", got)
	}
	if _, ok := got["linked.txt"]; ok {
		t.Errorf("artifacts = %v: they hold this process's file the script linked there", got)
	}
	if !strings.Contains(log, "1 artifact(s) were left out") || !strings.Contains(log, "only the build user's own files") {
		t.Errorf("the log does not say the linked file was left out:\n%s", log)
	}
}

// TestAfterScript: AfterScript runs once the script has exited, before
// the artifacts are read; its error is in the console log and the build
// keeps the script's status.
func TestAfterScript(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, `echo "script ran"; touch ../script-done`)
	calls := 0
	cfg.AfterScript = func() error {
		calls++
		if _, err := os.Stat(filepath.Join(cfg.Workspace, "..", "script-done")); err != nil {
			t.Errorf("AfterScript ran before the script ended: %v", err)
		}
		if err := os.WriteFile(filepath.Join(cfg.ArtifactsDir, "after.txt"), []byte("after\n"), 0o644); err != nil {
			t.Error(err)
		}
		return errors.New("3 processes still run")
	}
	res := entrypoint.Run(t.Context(), cfg)
	if calls != 1 {
		t.Errorf("AfterScript called %d times, want once", calls)
	}
	if res.Status != build.StatusSucceeded {
		t.Errorf("Run = %+v, want succeeded: the script's status", res)
	}
	if got := up.tarEntries(t); got["after.txt"] != "after\n" {
		t.Errorf("artifacts = %v: AfterScript's file is missing, so it ran after they were read", got)
	}
	if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "decap: could not stop what build.sh left running: 3 processes still run\n") {
		t.Errorf("the console log lacks AfterScript's error:\n%s", log)
	}
}
