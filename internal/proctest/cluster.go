// Package proctest runs Decap's services as real processes for tests: the
// ingest, dispatcher and reaper binaries built from cmd/ (BuildBinaries),
// started on a fresh data directory and loopback ports (Cluster), and
// driven from the outside through signed webhooks and the JSON API (the
// Cluster's HTTP methods). It is the harness that e2e/, e2e/browser/ and
// reliability/ share; each keeps its own secrets, build scripts and checks.
//
// Every process a Cluster starts, and every build process still running
// out of its data directory, is killed when the test ends; on failure the
// services' logs, the trace and what is left in the run directory are
// logged. The services need Linux (the local executor reads /proc).
package proctest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They are generous on purpose: the machines are
// small and shared, and no test asserts how fast anything is.
const (
	// ReadyTimeout bounds how long a service may take to answer /readyz.
	ReadyTimeout = 60 * time.Second
	// BuildTimeout bounds WaitStatus and its kin; tests use it for their
	// own WaitFor calls on builds too.
	BuildTimeout = 90 * time.Second
	// StopTimeout bounds how long a service may take to exit on SIGTERM.
	StopTimeout = 30 * time.Second
	// RequestTimeout bounds each request of the cluster's client, as
	// ingest's own DECAP_HTTP_WRITE_TIMEOUT default bounds its answer: on
	// a moto that other packages' tests load, a pull request's webhook (a
	// dozen AWS calls) took over 15 s, the bound before.
	RequestTimeout = 60 * time.Second
	// PollEvery is how often WaitFor asks its condition.
	PollEvery = 100 * time.Millisecond
)

// Options configure a Cluster.
type Options struct {
	// Bin is the directory of ingest, dispatcher, reaper and
	// decap-entrypoint (see BuildBinaries). Required.
	Bin string
	// Scripts is the build-scripts directory (DECAP_BUILD_SCRIPTS).
	Scripts string
	// Trace is a file the build scripts write, dumped on failure; "" for
	// none.
	Trace string
	// Cap is DECAP_MAX_RUNNING_BUILDS; 0 means no cap.
	Cap int
	// WebhookSecret and APIToken are the services' secrets, which the
	// Cluster's HTTP methods sign and authorize with; an empty one is not
	// set at all.
	WebhookSecret, APIToken string
	// Env is more environment of every service ("NAME=value"), after the
	// harness's own (os/exec keeps the last value of a name given twice),
	// e.g. the AWS backend's settings.
	Env []string
	// KindEnv is more environment of the services of one kind ("ingest",
	// "dispatcher", "reaper"), after Env: a kubeconfig of the service's own
	// ServiceAccount, say.
	KindEnv map[string][]string
	// AlwaysDump logs the dumps of a passing test too.
	AlwaysDump bool
}

// Cluster is one installation of the services: a data directory, a
// build-scripts directory and the service processes started on them. Its
// methods may be called from several goroutines; the ones that fail the
// test must be called from the test's goroutine.
type Cluster struct {
	tb         testing.TB
	opts       Options
	dir        string // the test's own directory: logs, data
	dataDir    string
	ingestAddr string // the same across ingest restarts
	client     *http.Client

	mu       sync.Mutex
	services []*Service
	started  map[string]int // per kind, to name processes
}

// NewCluster prepares, but starts nothing of, a cluster on a fresh data
// directory in tb's temporary directory. When tb ends, every process the
// cluster started and every build process still running is killed, and if
// tb failed (or Options.AlwaysDump is set), the dumps are logged.
func NewCluster(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Bin == "" {
		tb.Fatal("proctest: Options.Bin is empty; build the binaries first (BuildBinaries)")
	}
	dir := tb.TempDir()
	reachableByBuilds(tb, dir)
	c := &Cluster{
		tb:         tb,
		opts:       opts,
		dir:        dir,
		dataDir:    filepath.Join(dir, "data"),
		ingestAddr: FreeAddr(tb),
		client:     &http.Client{Timeout: RequestTimeout, Transport: &http.Transport{}},
		started:    map[string]int{},
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.cleanup)
	return c
}

// handedOut holds every address FreeAddr returned in this process.
var handedOut sync.Map

// FreeAddr returns a loopback address with a port that was free a moment
// ago and that FreeAddr never returned before in this process: the kernel
// may give a port just closed to the next listener, and a cluster's
// ingest address is chosen long before ingest binds it, so a dispatcher
// started in between could otherwise take it (and answer ingest's
// /readyz).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := UnusedAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// UnusedAddr is FreeAddr for a program that is not a test: it returns the
// error.
func UnusedAddr() (string, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr, nil
		}
	}
	return "", errors.New("find a free port: the kernel kept offering ports already handed out")
}

// Dir returns the cluster's own directory: logs/ holds a log per service
// process, data/ is the data directory.
func (c *Cluster) Dir() string { return c.dir }

// DataDir returns the data directory (DECAP_DATA_DIR).
func (c *Cluster) DataDir() string { return c.dataDir }

// RunDir returns the local executor's directory of build id.
func (c *Cluster) RunDir(id string) string {
	return filepath.Join(c.dataDir, "run", "build-"+id)
}

// Trace returns Options.Trace.
func (c *Cluster) Trace() string { return c.opts.Trace }

// IngestAddr returns ingest's address, the same across ingest restarts.
func (c *Cluster) IngestAddr() string { return c.ingestAddr }

// Client returns the HTTP client of the Cluster's HTTP methods. A test may
// wrap its Transport before it sends anything.
func (c *Cluster) Client() *http.Client { return c.client }

// Services returns every service process started so far, in start order,
// the exited ones included.
func (c *Cluster) Services() []*Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Service(nil), c.services...)
}

// Service is one started ingest, dispatcher or reaper process. Its
// exported fields are set once, at start.
type Service struct {
	// Name is the kind and a number per kind: "dispatcher-2".
	Name string
	// Addr is the address of its HTTP server (/healthz, /readyz, …).
	Addr string
	// LogPath is the file of its stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
	// ending is set before the harness signals the process, so its exit
	// is not taken for a crash.
	ending atomic.Bool
}

// Pid returns the process's ID, for reading /proc/<pid>/status (its
// memory) while it runs.
func (s *Service) Pid() int { return s.cmd.Process.Pid }

func (s *Service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// env is the complete environment of a service: nothing is inherited but
// PATH, HOME and TMPDIR, so no DECAP_* or AWS_* setting of the developer's
// shell leaks in; Options.Env and KindEnv come last. The local executor
// passes PATH and HOME on to the builds.
func (c *Cluster) env(kind, addr string) []string {
	env := []string{
		"DECAP_DATA_DIR=" + c.dataDir,
		"DECAP_BUILD_SCRIPTS=" + c.opts.Scripts,
		"DECAP_ADDR=" + c.ingestAddr,
		"DECAP_DISPATCHER_ADDR=" + addr,
		"DECAP_REAPER_ADDR=" + addr,
		"DECAP_ENTRYPOINT=" + filepath.Join(c.opts.Bin, "decap-entrypoint"),
		"DECAP_MAX_RUNNING_BUILDS=" + strconv.Itoa(c.opts.Cap),
		"DECAP_REAP_INTERVAL=100ms",
		"DECAP_LOG_FORMAT=text",
	}
	if c.opts.WebhookSecret != "" {
		env = append(env, "DECAP_GITHUB_WEBHOOK_SECRET="+c.opts.WebhookSecret)
	}
	if c.opts.APIToken != "" {
		env = append(env, "DECAP_API_TOKEN="+c.opts.APIToken)
	}
	for _, name := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	env = append(env, c.opts.Env...)
	return append(env, c.opts.KindEnv[kind]...)
}

// Start starts a service of kind ("ingest", "dispatcher" or "reaper") and
// waits until its /readyz answers 200.
func (c *Cluster) Start(kind string) *Service {
	c.tb.Helper()
	s := c.Launch(kind)
	c.WaitReady(s)
	return s
}

// Launch starts a service of kind without waiting for it.
func (c *Cluster) Launch(kind string) *Service {
	c.tb.Helper()
	addr := c.ingestAddr
	if kind != "ingest" {
		addr = FreeAddr(c.tb)
	}
	c.mu.Lock()
	c.started[kind]++
	name := fmt.Sprintf("%s-%d", kind, c.started[kind])
	c.mu.Unlock()

	logPath := filepath.Join(c.dir, "logs", name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		c.tb.Fatalf("create log of %s: %v", name, err)
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(c.opts.Bin, kind))
	cmd.Dir = c.dir
	cmd.Env = c.env(kind, addr)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = serviceProcAttr()
	if err := cmd.Start(); err != nil {
		c.tb.Fatalf("start %s: %v", name, err)
	}
	s := &Service{Name: name, Addr: addr, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	c.mu.Lock()
	c.services = append(c.services, s)
	c.mu.Unlock()
	c.tb.Logf("started %s (pid %d) on %s", name, cmd.Process.Pid, addr)
	return s
}

// WaitReady waits until s logged that it listens on its address and
// answers /readyz with 200; it fails the test after ReadyTimeout, or at
// once when a service crashed. The log line tells that the answer is s's:
// another process (of another test binary) may hold the port while s
// has not bound it yet.
func (c *Cluster) WaitReady(s *Service) {
	c.tb.Helper()
	c.WaitFor(ReadyTimeout, s.Name+" to be ready", func() (bool, string) {
		if !s.Listening() {
			return false, s.Name + " has not logged that it listens on " + s.Addr
		}
		return Ready(c.client, s.Addr)
	})
}

// Listening reports whether s logged that it listens on its address
// (internal/health's "listening" line).
func (s *Service) Listening() bool {
	data, err := os.ReadFile(s.LogPath)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, "listening") && strings.Contains(line, s.Addr) {
			return true
		}
	}
	return false
}

// Stop sends SIGTERM and waits for the process to exit; it fails the test
// unless the exit is clean (status 0) within StopTimeout.
func (c *Cluster) Stop(s *Service) {
	c.tb.Helper()
	s.ending.Store(true)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !s.exited() {
		c.tb.Fatalf("SIGTERM %s: %v", s.Name, err)
	}
	select {
	case <-s.done:
	case <-time.After(StopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		c.tb.Fatalf("%s did not exit within %s of SIGTERM", s.Name, StopTimeout)
	}
	if s.waitErr != nil {
		c.tb.Errorf("%s exited with %v after SIGTERM, want exit status 0", s.Name, s.waitErr)
	}
	c.tb.Logf("stopped %s", s.Name)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Cluster) Kill(s *Service) {
	c.tb.Helper()
	s.ending.Store(true)
	if err := s.cmd.Process.Kill(); err != nil && !s.exited() {
		c.tb.Fatalf("SIGKILL %s: %v", s.Name, err)
	}
	<-s.done
	c.tb.Logf("killed %s", s.Name)
}

// Crashed returns a description of every service that exited although the
// harness neither stopped nor killed it, nil when none did.
func (c *Cluster) Crashed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.services {
		if s.exited() && !s.ending.Load() {
			out = append(out, fmt.Sprintf("%s exited unexpectedly (%v)", s.Name, s.waitErr))
		}
	}
	return out
}

// WaitFor polls cond every PollEvery until it reports done, failing the
// test after timeout with cond's last status, or at once when a service
// crashed meanwhile. what names the wait in the failure.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() (done bool, status string)) {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, status := cond()
		if done {
			return
		}
		if crashes := c.Crashed(); len(crashes) > 0 {
			c.tb.Fatalf("while waiting for %s: %s; last status: %s", what, strings.Join(crashes, "; "), status)
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("timed out after %s waiting for %s; last status: %s", timeout, what, status)
		}
		time.Sleep(PollEvery)
	}
}

// cleanup kills every service and every build process still running, then,
// if the test failed, dumps the logs.
func (c *Cluster) cleanup() {
	services := c.Services()
	for _, s := range services {
		if !s.exited() {
			s.ending.Store(true)
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	if n := killBuilds(c.dataDir); n > 0 {
		c.tb.Logf("cleanup killed %d build processes that were still running", n)
	}
	c.client.CloseIdleConnections()
	if c.tb.Failed() || c.opts.AlwaysDump {
		c.dump(services)
	}
}
