package e2e_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The tests in this file run the scripts a newcomer runs — scripts/run-local.sh
// (make run), send-webhook.sh — as they are, with the binaries TestMain built.

// scriptRun is one run of a script in a process group of its own, so the
// services it starts are stopped with it.
type scriptRun struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // set before done is closed
}

// lockedBuffer is the merged stdout and stderr of a script, read while it
// runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// scriptEnv is the environment of a script: the test's, without any DECAP_*,
// AWS_* or MOTO_* setting of the developer's shell, plus env.
func scriptEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DECAP_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "MOTO_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, env...)
}

// startScript starts bash script (relative to dir) with args in dir, its
// environment scriptEnv(env...). The script and everything it started are
// killed when the test ends.
func startScript(t *testing.T, dir, script string, env []string, args ...string) *scriptRun {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(dir, script)}, args...)...)
	cmd.Dir = dir
	cmd.Env = scriptEnv(env...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	r := &scriptRun{t: t, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		if t.Failed() {
			t.Logf("==== %s output ====\n%s", script, out.String())
		}
	})
	return r
}

// wait waits up to d for the script to exit and returns its exit code, or
// fails the test.
func (r *scriptRun) wait(d time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		r.t.Fatalf("the script still runs after %s; its output so far:\n%s", d, r.out.String())
	}
	if r.err == nil {
		return 0
	}
	if exit, ok := r.err.(*exec.ExitError); ok {
		return exit.ExitCode()
	}
	r.t.Fatalf("wait for the script: %v", r.err)
	return -1
}

// makeRunEnv is the environment of scripts/run-local.sh on a data directory
// of the test's own and free loopback ports.
func makeRunEnv(t *testing.T, dataDir string, more ...string) []string {
	return append([]string{
		"BIN=" + binDir,
		"DECAP_DATA_DIR=" + dataDir,
		"DECAP_ADDR=" + proctest.FreeAddr(t),
		"DECAP_DISPATCHER_ADDR=" + proctest.FreeAddr(t),
		"DECAP_REAPER_ADDR=" + proctest.FreeAddr(t),
	}, more...)
}

// A mistyped DECAP_BUILD_SCRIPTS stops make run at start with an error that
// names the variable; it used to print "Decap is running" while /readyz
// answered 503 and every build request was refused.
func TestMakeRunStopsOnMistypedBuildScripts(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	t.Parallel()
	env := makeRunEnv(t, filepath.Join(t.TempDir(), "data"), "DECAP_BUILD_SCRIPTS=/tmp/decap-e2e-typo")
	r := startScript(t, moduleRoot, "scripts/run-local.sh", env)
	code := r.wait(60 * time.Second)
	out := r.out.String()
	if code == 0 {
		t.Errorf("make run exited with 0, want a failure")
	}
	if want := "DECAP_BUILD_SCRIPTS: build-scripts directory /tmp/decap-e2e-typo does not exist"; !strings.Contains(out, want) {
		t.Errorf("output does not say %q:\n%s", want, out)
	}
	if strings.Contains(out, "Decap is running") {
		t.Errorf("output says Decap is running:\n%s", out)
	}
}
