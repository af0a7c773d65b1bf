package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// binaries builds ingest, dispatcher, reaper and decap-entrypoint once per
// run and returns their directory: for the embedded default as `make run`
// runs them (`make build-embedded`: without the AWS SDK and client-go),
// else as `make build` does.
func (e *env) binaries(embedded bool) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if dir := e.bin[embedded]; dir != "" {
		return dir, nil
	}
	dir, build, what := filepath.Join(e.tmp, "bin"), proctest.BuildBinaries, "the services"
	if embedded {
		dir, build, what = filepath.Join(e.tmp, "bin-embedded"), proctest.BuildEmbeddedBinaries, "the embedded default's services"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	if err := build(e.root, dir); err != nil {
		return "", err
	}
	e.logf("built %s in %s", what, time.Since(start).Round(100*time.Millisecond))
	if e.bin == nil {
		e.bin = map[bool]string{}
	}
	e.bin[embedded] = dir
	return dir, nil
}

// service is one started ingest, dispatcher or reaper process.
type service struct {
	kind, addr string
	log        string
	cmd        *exec.Cmd
	done       chan struct{}
}

// installation is the services on one data directory, started with the
// same environment as e2e's harness (internal/proctest): nothing inherited
// but PATH, HOME and TMPDIR.
type installation struct {
	e        *env
	bin      string
	dataDir  string
	extra    []string
	services []*service
}

func (e *env) installation(name string, extra ...string) (*installation, error) {
	bin, err := e.binaries(!slices.Contains(extra, "DECAP_BACKEND=aws"))
	if err != nil {
		return nil, err
	}
	return &installation{e: e, bin: bin, dataDir: filepath.Join(e.dir(name), "data"), extra: extra}, nil
}

func (in *installation) env(ingestAddr, addr string) []string {
	env := []string{
		"DECAP_DATA_DIR=" + in.dataDir,
		"DECAP_BUILD_SCRIPTS=" + in.e.scripts,
		"DECAP_ADDR=" + ingestAddr,
		"DECAP_DISPATCHER_ADDR=" + addr,
		"DECAP_REAPER_ADDR=" + addr,
		"DECAP_ENTRYPOINT=" + filepath.Join(in.bin, "decap-entrypoint"),
		"DECAP_GITHUB_WEBHOOK_SECRET=" + webhookSecret,
		"DECAP_API_TOKEN=" + apiToken,
	}
	for _, name := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return append(env, in.extra...)
}

// start starts a service of kind and waits until its /readyz answers 200.
// ingestAddr is ingest's address (a service's own for ingest).
func (in *installation) start(kind, ingestAddr string) (*service, error) {
	addr := ingestAddr
	if kind != "ingest" {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(filepath.Dir(in.dataDir), fmt.Sprintf("%s-%d.log", kind, len(in.services)))
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(in.bin, kind))
	cmd.Env = in.env(ingestAddr, addr)
	cmd.Stdout, cmd.Stderr = out, out
	// The service dies with the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	s := &service{kind: kind, addr: addr, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	in.services = append(in.services, s)
	client := newClient(2)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if a := do(client, mustRequest(http.MethodGet, "http://"+addr+"/readyz", nil)); a.err == nil && a.status == http.StatusOK {
			return s, nil
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready within 60s: %d %v %.200s; log %s:\n%s", kind, a.status, a.err, a.body, logPath, tail(logPath, 2000))
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited before it was ready; log:\n%s", kind, tail(logPath, 2000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends every service SIGTERM and waits for it (SIGKILL after 30s),
// then kills what is left of build processes run out of the data
// directory: processes the bench's own dispatcher started.
func (in *installation) stop() {
	var wg sync.WaitGroup
	for _, s := range in.services {
		wg.Go(func() {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		})
	}
	wg.Wait()
	in.services = nil
	killBuilds(in.dataDir)
}

// killBuilds SIGKILLs the processes (and their process groups) whose
// command line names dataDir/run/: the local executor's build processes of
// this installation, each in a process group of its own. It waits for
// running builds (the bench's build.sh exits at once) for a few seconds
// first.
func killBuilds(dataDir string) {
	needle := []byte(filepath.Join(dataDir, "run") + string(filepath.Separator))
	find := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && bytes.Contains(cmdline, needle) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	for range 50 {
		if len(find()) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	own := syscall.Getpgrp()
	for _, pid := range find() {
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 && pgid != own {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// procMem returns a process's peak and current resident set (VmHWM,
// VmRSS) from /proc/<pid>/status, in bytes.
func procMem(pid int) (hwm, rss int64, err error) {
	m, err := procStatus(pid)
	return m["VmHWM"], m["VmRSS"], err
}

// procStatus returns the sizes of /proc/<pid>/status (VmHWM, VmRSS,
// RssAnon, RssFile, RssShmem, ...) in bytes.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	return m, nil
}

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func mustRequest(method, url string, body []byte) *http.Request {
	r, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	return r
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}
