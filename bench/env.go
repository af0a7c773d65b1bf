package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Names every scenario uses.
const (
	// team and project of the bench's build-scripts repository; GitHub's
	// sample push payloads name this repository.
	benchTeam    = "Codertocat"
	benchProject = "Hello-World"
	// webhookSecret and apiToken of every server the bench starts.
	webhookSecret = "bench-webhook-secret-1e5a9c3f7b2d"
	apiToken      = "bench-api-token-9d4b2f6a8c1e3e5f"
	// samplePush is GitHub's sample push of a branch (refs/heads/master).
	samplePush = "internal/ingest/testdata/github-webhooks/push-with-new-branch.json"
)

// env is what every scenario shares.
type env struct {
	root    string // the module's directory
	tmp     string // everything the run writes; removed at the end
	scripts string // the build-scripts directory
	scale   scale
	// scaleName and scaleArgs make the commands in the report.
	scaleName, scaleArgs string
	push                 []byte // samplePush
	stderr               io.Writer
	fsync                latencies // of the data directory's file system
	// useAWS: AWS_ENDPOINT_URL is set and -aws is auto.
	useAWS bool

	mu     sync.Mutex
	aws    *awsWorld // see world
	awsErr error
	bin    map[bool]string // see binaries, by embedded
}

func newEnv(getenv func(string) string, scaleName string, s scale, stderr io.Writer) (*env, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	push, err := os.ReadFile(filepath.Join(root, samplePush))
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(getenv("TMPDIR"), "decap-bench-")
	if err != nil {
		return nil, err
	}
	// Searchable (not listable) by other users: run as root, the local
	// executor runs builds under users of their own, which must reach the
	// data directories in it.
	if err := os.Chmod(tmp, 0o711); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	e := &env{root: root, tmp: tmp, scale: s, scaleName: scaleName, scaleArgs: s.args(scales[scaleName]), push: push, stderr: stderr}
	e.scripts = filepath.Join(tmp, "build-scripts")
	if err := writeScripts(e.scripts); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	e.fsync = measureFsync(tmp, 200)
	return e, nil
}

// writeScripts makes a build-scripts directory with the one project every
// scenario builds; every ref is managed and the build does nothing.
func writeScripts(dir string) error {
	p := filepath.Join(dir, benchTeam, benchProject)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p, "project.json"), []byte(`{"buildImage": "debian:bookworm-slim", "repoManager": "github"}`+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p, "build.sh"), []byte("#!/usr/bin/env bash\nexit 0\n"), 0o755)
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the bench inside the module (no go.mod found above the working directory)")
		}
		dir = parent
	}
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "bench: "+format+"\n", args...)
}

// dir returns a fresh directory under the run's temporary directory.
func (e *env) dir(name string) string {
	d, err := os.MkdirTemp(e.tmp, name+"-")
	if err == nil {
		err = os.Chmod(d, 0o711) // as tmp: builds reach their run directory
	}
	if err != nil {
		panic(err) // the temporary directory was just made
	}
	return d
}

// command is the command that reproduces scenario sc at this scale.
func (e *env) command(sc string) string {
	c := "go run ./bench -scale " + e.scaleName
	if e.scaleArgs != "" {
		c += " " + e.scaleArgs
	}
	c += " -only '^" + sc + "$'"
	if strings.HasSuffix(sc, "-aws") {
		c = "scripts/with-moto.sh " + c
	}
	return c
}

// pushFor returns the sample push payload with its ref replaced.
func (e *env) pushFor(ref string) []byte {
	var m map[string]any
	if err := json.Unmarshal(e.push, &m); err != nil {
		panic(err) // the sample is valid JSON
	}
	m["ref"] = "refs/heads/" + ref
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// distinctPush returns push (a sample push payload) with its after commit
// replaced by the SHA-1 of seed: a push of its own, not a replay of the
// sample, which ingest would answer without queueing anything. It copies
// the bytes rather than re-encoding them, so that it costs the load
// generator little.
func distinctPush(push []byte, seed string) []byte {
	const field = `"after":`
	i := bytes.Index(push, []byte(field))
	if i < 0 {
		panic("the sample push has no after commit") // the bench's own payloads
	}
	i += len(field) + bytes.IndexByte(push[i+len(field):], '"') + 1
	sum := sha1.Sum([]byte(seed))
	b := bytes.Clone(push)
	hex.Encode(b[i:i+2*sha1.Size], sum[:])
	return b
}

// machine describes the machine for the report's header.
func (e *env) machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			load = ", load average " + strings.Join(f[:3], " ") + " at the start"
		}
	}
	commit := "unknown commit"
	if out, err := exec.Command("git", "-C", e.root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = "commit " + strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", e.root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			commit += " (with uncommitted changes)"
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s %s/%s, %s%s; fdatasync of 4 KiB on the data directory's file system: p50 %s, p99 %s",
		runtime.NumCPU(), cpu, runtime.Version(), runtime.GOOS, runtime.GOARCH, commit, load,
		ms(e.fsync.quantile(0.5)), ms(e.fsync.quantile(0.99)))
}

// measureFsync times n 4 KiB writes each followed by fdatasync, in dir:
// what one durable SQLite commit costs at least on this file system.
func measureFsync(dir string, n int) latencies {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return nil
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var out latencies
	for i := range n {
		start := time.Now()
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			return out
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return out
		}
		out = append(out, time.Since(start))
	}
	return out
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// newClient returns an HTTP client that keeps up to conns connections to a
// host open.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0,
			DisableCompression: true, IdleConnTimeout: time.Minute,
		},
	}
}

// latencies is a sample of durations.
type latencies []time.Duration

// quantile returns the q-quantile by nearest rank (0 for no sample).
func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (l latencies) max() time.Duration { return l.quantile(1) }

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// perSec formats a rate.
func perSec(n float64, unit string) string {
	switch {
	case n >= 100:
		return fmt.Sprintf("%.0f %s/s", n, unit)
	case n >= 10:
		return fmt.Sprintf("%.1f %s/s", n, unit)
	}
	return fmt.Sprintf("%.2f %s/s", n, unit)
}

// cpuTime returns this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineTicks returns the machine's busy and total CPU ticks so far, from
// the first line of /proc/stat.
func machineTicks() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	v := make([]int64, 8)
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return busy, busy + v[3] + v[4]
}

// loadavg returns the 1-minute load average.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// usage is what the machine did while a scenario ran.
type usage struct {
	busy0, total0 int64
	cpu0          time.Duration
	wall0         time.Time
	load0         string
}

func startUsage() usage {
	b, t := machineTicks()
	return usage{busy0: b, total0: t, cpu0: cpuTime(), wall0: time.Now(), load0: loadavg()}
}

// String says how busy the machine was since u started, and how much of
// it was this process.
func (u usage) String() string {
	b, t := machineTicks()
	if t <= u.total0 {
		return ""
	}
	n := float64(runtime.NumCPU())
	machine := float64(b-u.busy0) / float64(t-u.total0) * n
	own := float64(cpuTime()-u.cpu0) / float64(time.Since(u.wall0))
	return fmt.Sprintf("The machine meanwhile: %.2f of %.0f cores busy on average, %.2f of them this process "+
		"(the services it started and moto not included); load average %s → %s.", machine, n, own, u.load0, loadavg())
}
