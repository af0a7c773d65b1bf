package e2e_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They are generous on purpose: the machine is
// small and shared, and no test asserts how fast anything is.
const (
	readyTimeout = 60 * time.Second
	buildTimeout = 90 * time.Second
	stopTimeout  = 30 * time.Second
	pollEvery    = 100 * time.Millisecond
)

// Secrets of every cluster; only the tests know them.
const (
	webhookSecret = "e2e-webhook-secret"
	apiToken      = "e2e-api-token"
)

// cluster is one embedded-default installation: a data directory, a
// build-scripts directory and the service processes started on them.
type cluster struct {
	t       *testing.T
	dir     string // the test's own directory: logs, trace
	dataDir string
	scripts string
	trace   string // the build scripts' trace file, if any
	cap     int
	extra   []string // more environment of every service
	// kindEnv is more environment of the services of one kind, after
	// extra: a kubeconfig of the service's own ServiceAccount, say.
	kindEnv map[string][]string
	// ingestAddr stays the same across ingest restarts.
	ingestAddr string
	client     *http.Client

	mu       sync.Mutex
	services []*service
	started  map[string]int // per kind, to name processes
}

// clusterOptions configure a cluster.
type clusterOptions struct {
	// Scripts is the build-scripts directory (DECAP_BUILD_SCRIPTS).
	Scripts string
	// Trace is the trace file the build scripts write, dumped on failure.
	Trace string
	// Cap is DECAP_MAX_RUNNING_BUILDS; 0 means no cap.
	Cap int
	// Env is more environment of every service ("NAME=value"), after the
	// harness's own, e.g. the AWS backend's settings.
	Env []string
}

// newCluster prepares (but starts nothing of) a cluster on a fresh data
// directory. Every process the cluster starts, and every build process
// still running, is killed when the test ends; on failure the services'
// logs are dumped.
func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	requireE2E(t)
	dir := t.TempDir()
	c := &cluster{
		t:          t,
		dir:        dir,
		dataDir:    filepath.Join(dir, "data"),
		scripts:    opts.Scripts,
		trace:      opts.Trace,
		cap:        opts.Cap,
		extra:      opts.Env,
		ingestAddr: freeAddr(t),
		client:     &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}},
		started:    map[string]int{},
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cleanup)
	return c
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// service is one started ingest, dispatcher or reaper process.
type service struct {
	name, addr string
	logPath    string
	cmd        *exec.Cmd
	done       chan struct{} // closed when the process has exited
	waitErr    error         // set before done is closed
	// ending is set before the harness signals the process, so its exit
	// is not taken for a crash.
	ending atomic.Bool
}

func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// env is the complete environment of a service: nothing is inherited but
// PATH, HOME and TMPDIR, so no DECAP_* or AWS_* setting of the developer's
// shell leaks in; clusterOptions.Env comes last. The local executor passes
// PATH and HOME on to the builds.
func (c *cluster) env(addr string) []string {
	env := []string{
		"DECAP_DATA_DIR=" + c.dataDir,
		"DECAP_BUILD_SCRIPTS=" + c.scripts,
		"DECAP_ADDR=" + c.ingestAddr,
		"DECAP_DISPATCHER_ADDR=" + addr,
		"DECAP_REAPER_ADDR=" + addr,
		"DECAP_ENTRYPOINT=" + filepath.Join(binDir, "decap-entrypoint"),
		"DECAP_GITHUB_WEBHOOK_SECRET=" + webhookSecret,
		"DECAP_API_TOKEN=" + apiToken,
		"DECAP_MAX_RUNNING_BUILDS=" + strconv.Itoa(c.cap),
		"DECAP_REAP_INTERVAL=100ms",
		"DECAP_LOG_FORMAT=text",
	}
	for _, name := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return append(env, c.extra...)
}

// start starts a service of kind ("ingest", "dispatcher" or "reaper") and
// waits until its /readyz answers 200.
func (c *cluster) start(kind string) *service {
	c.t.Helper()
	s := c.launch(kind)
	c.waitReady(s)
	return s
}

// launch starts a service of kind without waiting for it.
func (c *cluster) launch(kind string) *service {
	c.t.Helper()
	addr := c.ingestAddr
	if kind != "ingest" {
		addr = freeAddr(c.t)
	}
	c.mu.Lock()
	c.started[kind]++
	name := fmt.Sprintf("%s-%d", kind, c.started[kind])
	c.mu.Unlock()

	logPath := filepath.Join(c.dir, "logs", name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		c.t.Fatalf("create log of %s: %v", name, err)
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(binDir, kind))
	cmd.Dir = c.dir
	cmd.Env = append(c.env(addr), c.kindEnv[kind]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = serviceProcAttr()
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	s := &service{name: name, addr: addr, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	c.mu.Lock()
	c.services = append(c.services, s)
	c.mu.Unlock()
	c.t.Logf("started %s (pid %d) on %s", name, cmd.Process.Pid, addr)
	return s
}

// waitReady waits until s answers /readyz with 200.
func (c *cluster) waitReady(s *service) {
	c.t.Helper()
	c.waitFor(readyTimeout, s.name+" to be ready", func() (bool, string) {
		resp, err := c.client.Get("http://" + s.addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
	})
}

// stop sends SIGTERM and waits for a clean exit (status 0).
func (c *cluster) stop(s *service) {
	c.t.Helper()
	s.ending.Store(true)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !s.exited() {
		c.t.Fatalf("SIGTERM %s: %v", s.name, err)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		c.t.Fatalf("%s did not exit within %s of SIGTERM", s.name, stopTimeout)
	}
	if s.waitErr != nil {
		c.t.Errorf("%s exited with %v after SIGTERM, want exit status 0", s.name, s.waitErr)
	}
	c.t.Logf("stopped %s", s.name)
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *cluster) kill(s *service) {
	c.t.Helper()
	s.ending.Store(true)
	if err := s.cmd.Process.Kill(); err != nil && !s.exited() {
		c.t.Fatalf("SIGKILL %s: %v", s.name, err)
	}
	<-s.done
	c.t.Logf("killed %s", s.name)
}

// crashed returns a description of every service that exited although the
// harness neither stopped nor killed it.
func (c *cluster) crashed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.services {
		if s.exited() && !s.ending.Load() {
			out = append(out, fmt.Sprintf("%s exited unexpectedly (%v)", s.name, s.waitErr))
		}
	}
	return out
}

// waitFor polls cond until it reports true, failing the test after timeout
// with cond's last status, or at once when a service crashed meanwhile.
func (c *cluster) waitFor(timeout time.Duration, what string, cond func() (done bool, status string)) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, status := cond()
		if done {
			return
		}
		if crashes := c.crashed(); len(crashes) > 0 {
			c.t.Fatalf("while waiting for %s: %s; last status: %s", what, strings.Join(crashes, "; "), status)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s; last status: %s", timeout, what, status)
		}
		time.Sleep(pollEvery)
	}
}

// runDir is the local executor's directory of build id.
func (c *cluster) runDir(id string) string {
	return filepath.Join(c.dataDir, "run", "build-"+id)
}

// cleanup kills every service and every build process still running, then,
// if the test failed, dumps the logs.
func (c *cluster) cleanup() {
	c.mu.Lock()
	services := append([]*service(nil), c.services...)
	c.mu.Unlock()
	for _, s := range services {
		if !s.exited() {
			s.ending.Store(true)
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	if n := killBuilds(c.dataDir); n > 0 {
		c.t.Logf("cleanup killed %d build processes that were still running", n)
	}
	c.client.CloseIdleConnections()
	if c.t.Failed() || os.Getenv("E2E_DUMP") != "" {
		c.dump(services)
	}
}

// killBuilds SIGKILLs every process (and its process group) whose command
// line names the data directory: decap-entrypoint runs with -run-dir
// <data>/run/build-<id>, the build script as bash <data>/run/.../build.sh,
// each in its own process group that holds the script's children. It
// returns how many such processes it found.
func killBuilds(dataDir string) int {
	needle := []byte(filepath.Join(dataDir, "run") + string(filepath.Separator))
	own := syscall.Getpgrp()
	killed := map[int]bool{}
	for range 50 {
		found := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !bytes.Contains(cmdline, needle) {
				continue
			}
			found++
			killed[pid] = true
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 && pgid != own {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if found == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return len(killed)
}

// dump logs the tail of every service's log, the trace, and what is left
// in the run directory.
func (c *cluster) dump(services []*service) {
	const max = 24 << 10
	for _, s := range services {
		c.t.Logf("==== %s log (%s) ====\n%s", s.name, s.logPath, tail(s.logPath, max))
	}
	if c.trace != "" && fileExists(c.trace) {
		c.t.Logf("==== trace (%s) ====\n%s", c.trace, tail(c.trace, max))
	}
	runs, _ := filepath.Glob(filepath.Join(c.dataDir, "run", "build-*"))
	sort.Strings(runs)
	for _, dir := range runs {
		var b strings.Builder
		for _, name := range []string{"pid", "script.pid", "result.json", "entrypoint.out", "console.log"} {
			p := filepath.Join(dir, name)
			if fileExists(p) {
				fmt.Fprintf(&b, "-- %s --\n%s\n", name, tail(p, 4<<10))
			}
		}
		c.t.Logf("==== run directory %s ====\n%s", filepath.Base(dir), b.String())
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tail returns the last max bytes of a file, or why it cannot be read.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	prefix := ""
	if info.Size() > max {
		f.Seek(info.Size()-max, io.SeekStart)
		prefix = "…(cut)…\n"
	}
	data, _ := io.ReadAll(f)
	return prefix + string(data)
}
