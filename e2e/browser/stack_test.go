package browser_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// apiToken is the API token of every stack; only the tests know it.
const apiToken = "browser-test-api-token"

// stack is ingest, a dispatcher and a reaper of the embedded default,
// started on one fresh data directory.
type stack struct {
	t       *testing.T
	dir     string
	dataDir string
	addr    string // ingest
	procs   []*proc
}

type proc struct {
	name, addr, logPath string
	cmd                 *exec.Cmd
	done                chan struct{}
}

// startStack builds the binaries if needed and starts the three services
// on scripts; everything it started, builds included, is killed when the
// test ends, and on failure the services' logs are logged.
func startStack(t *testing.T, scripts string) *stack {
	t.Helper()
	binaries(t)
	dir := t.TempDir()
	s := &stack{t: t, dir: dir, dataDir: filepath.Join(dir, "data"), addr: freeAddr(t)}
	t.Cleanup(s.cleanup)
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		addr := s.addr
		if kind != "ingest" {
			addr = freeAddr(t)
		}
		p := s.launch(kind, addr, []string{
			"DECAP_DATA_DIR=" + s.dataDir,
			"DECAP_BUILD_SCRIPTS=" + scripts,
			"DECAP_ADDR=" + s.addr,
			"DECAP_DISPATCHER_ADDR=" + addr,
			"DECAP_REAPER_ADDR=" + addr,
			"DECAP_ENTRYPOINT=" + filepath.Join(binDir, "decap-entrypoint"),
			"DECAP_API_TOKEN=" + apiToken,
			"DECAP_MAX_RUNNING_BUILDS=4",
			"DECAP_REAP_INTERVAL=100ms",
			"DECAP_LOG_FORMAT=text",
		})
		s.waitReady(p)
	}
	return s
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// launch starts one service with env and nothing of the caller's
// environment but PATH, HOME and TMPDIR.
func (s *stack) launch(kind, addr string, env []string) *proc {
	s.t.Helper()
	for _, name := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	p := &proc{name: kind, addr: addr, logPath: filepath.Join(s.dir, kind+".log"), done: make(chan struct{})}
	out, err := os.Create(p.logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	p.cmd = exec.Command(filepath.Join(binDir, kind))
	p.cmd.Dir = s.dir
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// The service dies with the test binary, whatever happens to it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", kind, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return p
}

func (s *stack) waitReady(p *proc) {
	s.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			s.t.Fatalf("%s exited while starting (%v):\n%s", p.name, p.cmd.ProcessState, readTail(p.logPath))
		default:
		}
		resp, err := client.Get("http://" + p.addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("%s not ready after 60s: %s", p.name, last)
}

func (s *stack) url(path string) string { return "http://" + s.addr + path }

// cleanup kills the services, then every build process still running out
// of the data directory, and logs the services' logs if the test failed.
func (s *stack) cleanup() {
	for _, p := range s.procs {
		p.cmd.Process.Kill()
		<-p.done
	}
	killBuilds(filepath.Join(s.dataDir, "run") + string(filepath.Separator))
	if s.t.Failed() {
		for _, p := range s.procs {
			s.t.Logf("==== %s log ====\n%s", p.name, readTail(p.logPath))
		}
	}
}

// killBuilds SIGKILLs every process, with its process group, whose command
// line names the run directory: the local executor starts each build
// detached, in its own process group, with the run directory in its
// arguments.
func killBuilds(runDir string) {
	needle := []byte(runDir)
	own := syscall.Getpgrp()
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
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 && pgid != own {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if found == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readTail returns the last 16 KiB of a file.
func readTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(data) > 16<<10 {
		return "…" + string(data[len(data)-16<<10:])
	}
	return string(data)
}
