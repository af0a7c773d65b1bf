package localexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// Files of a build's directory, <RunDir>/<pod name>/. The local executor
// writes the job, the scripts and pid; decap-entrypoint writes the console
// log, script.pid and the result (and pid, if its launcher died before).
const (
	JobFile        = "job.json"
	ResultFile     = "result.json"
	ConsoleLogFile = "console.log"
	ScriptsDir     = "scripts"
	WorkspaceDir   = "workspace"
	ArtifactsDir   = "artifacts"
	// SecretsDir holds the build's secrets, one file per name (see
	// writeSecrets); the build finds it as BUILD_SECRETS.
	SecretsDir    = "secrets"
	pidFile       = "pid"
	scriptPIDFile = "script.pid"
	lockFile      = "launch.lock"
	aliveFile     = "alive.lock"
	cancelFile    = "cancel"
	outFile       = "entrypoint.out"
)

// jobJSON is the content of job.json.
type jobJSON struct {
	Request       build.Request    `json:"request"`
	Descriptor    build.Descriptor `json:"descriptor"`
	CatalogCommit string           `json:"catalogCommit,omitempty"`
	// Timeout is a Go duration such as "1h0m0s".
	Timeout string `json:"timeout"`
}

func writeJob(dir string, job build.Job) error {
	data, err := json.MarshalIndent(jobJSON{
		Request:       job.Request,
		Descriptor:    job.Descriptor,
		CatalogCommit: job.CatalogCommit,
		Timeout:       job.Timeout.String(),
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode job: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, JobFile), append(data, '\n'))
}

// writeSecrets puts the build's secrets into dir/secrets/, one file per
// name, readable by the build's user alone: the directory 0700 and the
// files 0400, owned by uid (this process's user when uid < 0). Nothing of
// them goes into job.json. The files are written while the directory is
// still this process's, then given to uid; an earlier, interrupted launch's
// directory is replaced. With no secrets there is no directory.
func writeSecrets(dir string, uid int, secrets []build.Secret) error {
	p := filepath.Join(dir, SecretsDir)
	if err := removeAll(p); err != nil {
		return fmt.Errorf("clear secrets: %w", err)
	}
	if len(secrets) == 0 {
		return nil
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return fmt.Errorf("create secrets: %w", err)
	}
	for _, s := range secrets {
		if err := build.ValidateSecretName(s.Name); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(p, s.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o400)
		if err != nil {
			return fmt.Errorf("write secret %s: %w", s.Name, err)
		}
		_, err = f.Write(s.Value)
		if err == nil && uid >= 0 {
			err = f.Chown(uid, uid)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write secret %s: %w", s.Name, err)
		}
	}
	if uid >= 0 {
		if err := os.Chown(p, uid, uid); err != nil {
			return fmt.Errorf("give the secrets to the build uid: %w", err)
		}
	}
	return nil
}

// ReadJob reads the job.json of the build directory dir.
func ReadJob(dir string) (build.Job, error) {
	data, err := os.ReadFile(filepath.Join(dir, JobFile))
	if err != nil {
		return build.Job{}, fmt.Errorf("read job: %w", err)
	}
	var j jobJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return build.Job{}, fmt.Errorf("%w: job.json: %v", build.ErrInvalid, err)
	}
	timeout, err := time.ParseDuration(j.Timeout)
	if err != nil {
		return build.Job{}, fmt.Errorf("%w: job.json: timeout: %v", build.ErrInvalid, err)
	}
	return build.Job{Request: j.Request, Descriptor: j.Descriptor, CatalogCommit: j.CatalogCommit, Timeout: timeout}, nil
}

// WriteResult writes result.json into the build directory dir, atomically.
func WriteResult(dir string, r entrypoint.Result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, ResultFile), append(data, '\n'))
}

// writeResultOnce writes result.json unless there is one already; it
// reports whether it wrote.
func writeResultOnce(dir string, r entrypoint.Result) (bool, error) {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return false, fmt.Errorf("encode result: %w", err)
	}
	return writeFileOnce(dir, ResultFile, append(data, '\n'))
}

// writeFileOnce writes dir/name atomically unless it exists already; it
// reports whether it wrote.
func writeFileOnce(dir, name string, data []byte) (bool, error) {
	tmp, err := writeTemp(dir, name, data)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	// link, unlike rename, fails when the target exists.
	err = os.Link(tmp, filepath.Join(dir, name))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", name, err)
	}
	return true, nil
}

// readResult reads result.json; fs.ErrNotExist when there is none.
func readResult(dir string) (entrypoint.Result, error) {
	data, err := os.ReadFile(filepath.Join(dir, ResultFile))
	if err != nil {
		return entrypoint.Result{}, err
	}
	var r entrypoint.Result
	if err := json.Unmarshal(data, &r); err != nil {
		return entrypoint.Result{}, fmt.Errorf("%w: result.json: %v", build.ErrInvalid, err)
	}
	return r, nil
}

// WriteScriptPID records the build script's process (also its process
// group), so that the group can be stopped if decap-entrypoint dies.
func WriteScriptPID(dir string, pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, scriptPIDFile), []byte(process{pid, start}.String()))
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := writeTemp(filepath.Dir(path), filepath.Base(path), data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// writeTemp writes data to a synced temporary file in dir and returns its
// path.
func writeTemp(dir, name string, data []byte) (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(b[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return tmp, nil
}

// process identifies a process across pid reuse: its pid and its start time
// in clock ticks since boot.
type process struct {
	pid   int
	start uint64
}

func (p process) String() string { return fmt.Sprintf("%d %d\n", p.pid, p.start) }

// readProcess reads a pid file; fs.ErrNotExist when there is none.
func readProcess(path string) (process, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return process{}, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return process{}, fmt.Errorf("%w: %s: want pid and start time", build.ErrInvalid, filepath.Base(path))
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return process{}, fmt.Errorf("%w: %s: want pid and start time", build.ErrInvalid, filepath.Base(path))
	}
	return process{pid, start}, nil
}

// alive reports whether the process still runs: its pid exists with the
// same start time and is not a zombie.
func (p process) alive() bool {
	state, start, err := procStat(p.pid)
	return err == nil && start == p.start && state != 'Z' && state != 'X'
}

// exists reports whether the pid is taken by the same process, even as a
// zombie.
func (p process) exists() bool {
	_, start, err := procStat(p.pid)
	return err == nil && start == p.start
}

func startTime(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// procStat reads the state (field 3) and start time (field 22) of
// /proc/<pid>/stat.
func procStat(pid int) (byte, uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain anything.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return f[0][0], start, nil
}

// lock holds an exclusive flock on a build's launch.lock.
type lock struct{ f *os.File }

// tryLock takes the lock if it is free; ok is false when another process
// (or another Executor in this one) holds it.
func tryLock(dir string) (l lock, ok bool, err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return lock{}, false, fmt.Errorf("open launch lock: %w", err)
	}
	ok, err = flock(f, syscall.LOCK_EX)
	if err != nil || !ok {
		f.Close()
		if err != nil {
			return lock{}, false, fmt.Errorf("lock launch: %w", err)
		}
		return lock{}, false, nil
	}
	return lock{f}, true, nil
}

// takeLock waits for the lock until ctx is done.
func takeLock(ctx context.Context, dir string) (lock, error) {
	for {
		l, ok, err := tryLock(dir)
		if err != nil || ok {
			return l, err
		}
		select {
		case <-ctx.Done():
			return lock{}, fmt.Errorf("lock launch: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unlock releases the lock; closing the file drops the flock.
func (l lock) unlock() { l.f.Close() }

// flock tries to take the flock how (LOCK_EX or LOCK_SH) on f without
// waiting; ok is false when a conflicting lock is held.
func flock(f *os.File, how int) (ok bool, err error) {
	for {
		err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}

// alive.lock says whether a build's decap-entrypoint lives, independent of
// its pid file: the launcher takes an exclusive flock on it before starting
// the entrypoint, which inherits the open file description and with it the
// lock, and closes its own descriptor after the start. The lock is gone
// when the entrypoint is, however it ends; it is not passed on to build.sh
// (see Handshake). Probes take a shared lock for an instant, so that they
// never make each other see a live build.

// lockAlive creates alive.lock and takes its exclusive flock, for the
// entrypoint about to be started to inherit. The caller holds the launch
// lock and found alive.lock free, so only probes can be in the way, each
// for an instant; it waits for them until ctx is done.
func lockAlive(ctx context.Context, dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, aliveFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open alive lock: %w", err)
	}
	for {
		ok, err := flock(f, syscall.LOCK_EX)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock alive lock: %w", err)
		}
		if ok {
			return f, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock alive lock: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// aliveHeld reports whether a process holds alive.lock: the build's
// entrypoint (or the launcher about to start it) lives. No alive.lock, or
// no build directory, means no.
func aliveHeld(dir string) (bool, error) {
	f, err := os.Open(filepath.Join(dir, aliveFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe alive lock: %w", err)
	}
	defer f.Close() // drops the probe's shared lock, if it got one
	free, err := flock(f, syscall.LOCK_SH)
	if err != nil {
		return false, fmt.Errorf("probe alive lock: %w", err)
	}
	return !free, nil
}

// UploadsFile holds a build's presigned upload URLs (key → URL), readable by
// its owner only: the URLs are a narrow credential.
const UploadsFile = "uploads.json"

func writeUploads(dir string, urls map[string]string) error {
	data, err := json.Marshal(urls)
	if err != nil {
		return fmt.Errorf("encode uploads: %w", err)
	}
	path := filepath.Join(dir, UploadsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write uploads: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write uploads: %w", err)
	}
	return nil
}

// ReadUploads reads the presigned upload URLs of the build directory dir;
// an error wrapping fs.ErrNotExist when the build uploads into a directory.
func ReadUploads(dir string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, UploadsFile))
	if err != nil {
		return nil, fmt.Errorf("read uploads: %w", err)
	}
	var urls map[string]string
	if err := json.Unmarshal(data, &urls); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", build.ErrInvalid, UploadsFile, err)
	}
	return urls, nil
}
