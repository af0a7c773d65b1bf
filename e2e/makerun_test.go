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

// startScript starts bash script (absolute, or relative to dir) with args in dir, its
// environment scriptEnv(env...). The script and everything it started are
// killed when the test ends.
func startScript(t *testing.T, dir, script string, env []string, args ...string) *scriptRun {
	t.Helper()
	if !filepath.IsAbs(script) {
		script = filepath.Join(dir, script)
	}
	cmd := exec.Command("bash", append([]string{script}, args...)...)
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

// send-webhook.sh fails when Decap refuses the webhook (it exited 0 on 401
// and 400), and works from any directory: without a secret set it reads
// .decap/github-webhook-secret of its own checkout, not of the current
// directory.
func TestSendWebhookScript(t *testing.T) {
	t.Parallel()
	c := newCluster(t, proctest.Options{Scripts: filepath.Join(moduleRoot, "examples", "build-scripts")})
	c.Start("ingest")
	checkout := newCheckout(t)
	if err := os.MkdirAll(filepath.Join(checkout, ".decap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(checkout, ".decap", "github-webhook-secret"), []byte(webhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(moduleRoot, "internal", "ingest", "testdata", "github-webhooks", "push-with-new-branch.json")
	garbage := filepath.Join(t.TempDir(), "garbage.json")
	if err := os.WriteFile(garbage, []byte(`{"ref": `), 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	tests := []struct {
		name     string
		env      []string
		payload  string
		wantCode int
		wantOut  string
	}{
		{"the checkout's secret, from another directory", nil, payload, 0, `"lockKey":"Codertocat/Hello-World/master"`},
		{"a wrong secret", []string{"DECAP_GITHUB_WEBHOOK_SECRET=not-the-secret"}, payload, 1, "401"},
		{"a payload that is not JSON", nil, garbage, 1, "400"},
		{"no secret anywhere", []string{"DECAP_DATA_DIR=" + elsewhere}, payload, 2, "no webhook secret"},
	}
	for _, tt := range tests {
		r := startScript(t, elsewhere, filepath.Join(checkout, "scripts", "send-webhook.sh"), append([]string{"DECAP_ADDR=" + c.IngestAddr()}, tt.env...), tt.payload)
		code := r.wait(30 * time.Second)
		if out := r.out.String(); code != tt.wantCode || !strings.Contains(out, tt.wantOut) {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit %d and %q", tt.name, code, out, tt.wantCode, tt.wantOut)
		}
	}
}

// make help prints commands that can be pasted as they are (it showed
// eval "$$(make -s moto)", make's own escape), and no colour codes when
// its output is not a terminal.
func TestMakeHelp(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("make is not installed: %v", err)
	}
	t.Parallel()
	out, err := exec.Command("make", "-s", "-C", moduleRoot, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "\x1b[") {
		t.Errorf("make help into a pipe prints ANSI colour codes:\n%q", out)
	}
	if strings.Contains(string(out), "$$") {
		t.Errorf("make help shows make's $$ escape, which a shell reads as its pid:\n%s", out)
	}
	for _, want := range []string{"run-aws", `eval "$(make -s moto)"`, "MOTO_PORT"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make help does not mention %s:\n%s", want, out)
		}
	}
}

// Ctrl-C (SIGINT to the terminal's whole process group, the services
// included) and a SIGTERM to make run itself stop it cleanly: status 0 and
// "Decap stopped", not "a Decap service exited with status 0; stopping the
// others", nor a status of 143 that make reports as an error.
func TestMakeRunStopsCleanly(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	t.Parallel()
	for _, tt := range []struct {
		name  string
		group bool
		sig   syscall.Signal
	}{
		{"Ctrl-C", true, syscall.SIGINT},
		{"SIGTERM to make run", false, syscall.SIGTERM},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := makeRunEnv(t, filepath.Join(t.TempDir(), "data"), "DECAP_BUILD_SCRIPTS="+filepath.Join(moduleRoot, "examples", "build-scripts"))
			r := startScript(t, moduleRoot, "scripts/run-local.sh", env)
			waitRunning(t, r, 60*time.Second)
			pid := r.cmd.Process.Pid
			if tt.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, tt.sig); err != nil {
				t.Fatal(err)
			}
			code := r.wait(60 * time.Second)
			out := r.out.String()
			if code != 0 || !strings.Contains(out, "Decap stopped") || strings.Contains(out, "exited with status") {
				t.Errorf("after %s: exit %d, output:\n%s\nwant exit 0 and \"Decap stopped\"", tt.name, code, out)
			}
		})
	}
}

// make run-aws on a moto of MOTO_PORT: it says which port to stop (the
// hint named none, so the default 5000), and when a moto that moto.sh
// started earlier already answers there it says it reuses it, with its
// state, instead of doing so silently. create-world.sh is given a prefix it
// refuses, so that the script stops right after moto.
func TestRunAWSNamesItsMoto(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := exec.LookPath("moto_server"); err != nil {
		t.Skipf("moto_server is not installed: %v", err)
	}
	t.Parallel()
	addr := proctest.FreeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	t.Cleanup(func() {
		out, err := exec.Command("bash", filepath.Join(moduleRoot, "scripts", "moto.sh"), "stop", port).CombinedOutput()
		if err != nil {
			t.Errorf("moto.sh stop %s: %v\n%s", port, err, out)
		}
	})
	env := []string{"MOTO_PORT=" + port, "DECAP_PREFIX=NOT-A-PREFIX", "BIN=" + binDir}
	for i, want := range []string{"started moto_server", "reusing the moto_server"} {
		r := startScript(t, moduleRoot, "scripts/run-aws.sh", env)
		if code := r.wait(90 * time.Second); code == 0 {
			t.Fatalf("run-aws.sh with a bad prefix exited 0")
		}
		out := r.out.String()
		for _, w := range []string{want, "scripts/moto.sh stop " + port, "127.0.0.1:" + port} {
			if !strings.Contains(out, w) {
				t.Errorf("run %d: output does not say %q:\n%s", i+1, w, out)
			}
		}
	}
}
