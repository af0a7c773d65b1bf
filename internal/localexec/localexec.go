// Package localexec is the embedded default's executor, the stand-in for
// Kubernetes build Pods: each build runs decap-entrypoint as a detached
// local process in its own directory, <RunDir>/<pod name>/.
//
// The directory is the whole state, so the process that launches builds (the
// dispatcher) and the process that observes their end (the reaper) share
// nothing but the file system, and either may restart at any time:
//
//	launch.lock     flock held while a build is being launched
//	alive.lock      flock held by decap-entrypoint for as long as it lives
//	cancel          Cancel asked for the build before it ran
//	job.json        the build.Job
//	scripts/        the build scripts at the catalog commit
//	workspace/      the script's working directory
//	artifacts/      BUILD_ARTIFACTS
//	secrets/        BUILD_SECRETS: the build's secrets, one file each, the
//	                build user's alone; removed when the script ends
//	home/, tmp/     the script's HOME and TMPDIR
//	pid             "<pid> <start time>" of decap-entrypoint, written by the
//	                launcher, or by the entrypoint if the launcher died first
//	script.pid      "<pid> <start time>" of build.sh, also its process group
//	console.log     the live console log
//	entrypoint.out  decap-entrypoint's own output
//	result.json     the entrypoint.Result, once the build ended
//
// Beside the build directories, <RunDir>/.watch/ holds a unix socket per
// Watch, through which launchers say that a build's process ended (see
// wake.go). Who may read and write what, and as which user the script
// runs, is in isolate.go.
package localexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// Defaults for the zero values of Config.
const (
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultLaunchGrace is well past the queue's visibility timeout (30s)
	// and the dispatcher's longest retry delay (15m):
	// an interrupted launch is completed by the redelivered request long
	// before the launch is given up as interrupted.
	DefaultLaunchGrace = 30 * time.Minute
	// TombstoneTTL is how long a removed build is remembered, so that a late
	// redelivery of its request does not run it again: longer than any
	// request lives on the queue.
	TombstoneTTL = build.IdempotencyTTL
)

// Names under RunDir that are not build directories; list skips them (they
// start with '.').
const (
	tombstoneDir   = ".removed"
	removingPrefix = ".removing-"
)

// Scripts exports the build scripts. The catalog implements it.
type Scripts interface {
	// Export writes the files of team/project at commit under dest, as
	// dest/<team>/<project>/build.sh and so on. dest exists and is empty.
	Export(ctx context.Context, commit, team, project, dest string) error
}

// Config configures an Executor.
type Config struct {
	// RunDir holds one directory per build; created if missing.
	RunDir string
	// BlobsDir is the localfs.Blobs directory the builds upload to, unless
	// Uploads is set.
	BlobsDir string
	// Uploads, when set, returns presigned upload URLs (object key → URL,
	// valid for ttl: the build's timeout plus build.UploadGrace) for a
	// build, which then uploads its log and artifacts over HTTP, as a build
	// Pod does, instead of into BlobsDir.
	Uploads func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error)
	// EntrypointPath is the decap-entrypoint binary.
	EntrypointPath string
	Scripts        Scripts
	// Env is the environment of decap-entrypoint and so the base of the
	// build script's. Nil means PATH, HOME, USER, LOGNAME, SHELL, LANG,
	// LC_ALL, TZ and TMPDIR of this process: no secrets of the dispatcher.
	Env []string
	// PollInterval is how often Watch scans RunDir; zero means
	// DefaultPollInterval.
	PollInterval time.Duration
	// LaunchGrace is how long a build directory may stay without a process
	// before Watch reports the launch as interrupted; zero means
	// DefaultLaunchGrace.
	LaunchGrace time.Duration
	// Isolation says what to do when builds cannot run under users of
	// their own (see isolate.go); "" means IsolationBestEffort.
	Isolation Isolation
	// BuildUIDs are the uids builds run as, one per running build, when
	// this process runs as root; the zero range means
	// DefaultFirstBuildUID-DefaultLastBuildUID.
	BuildUIDs UIDRange
	Logger    *slog.Logger
	Now       func() time.Time
}

// Executor launches builds as local processes and observes their end. Any
// number of Executors, in any number of processes, may share a RunDir.
type Executor struct {
	cfg Config
	log *slog.Logger
	// isolated is set when builds run under uids of their own.
	isolated bool
	// Set by tests only (export_test.go): launches stop right after the
	// entrypoint started, as if the launcher died; pidWriteHook, if set,
	// runs instead of the pid write and returns its error.
	crashAfterStart bool
	pidWriteHook    func() error
}

// New returns an Executor. It creates RunDir and checks that the entrypoint
// binary exists. When this process runs as root, builds run under uids of
// their own, and New checks that they can reach RunDir; otherwise it warns
// that they cannot be isolated, or, with IsolationRequired, fails.
func New(cfg Config) (*Executor, error) {
	switch {
	case cfg.RunDir == "":
		return nil, fmt.Errorf("%w: run directory is empty", build.ErrInvalid)
	case cfg.BlobsDir == "" && cfg.Uploads == nil:
		return nil, fmt.Errorf("%w: neither a blobs directory nor presigned uploads", build.ErrInvalid)
	case cfg.EntrypointPath == "":
		return nil, fmt.Errorf("%w: entrypoint path is empty", build.ErrInvalid)
	case cfg.Scripts == nil:
		return nil, fmt.Errorf("%w: no build scripts source", build.ErrInvalid)
	}
	if info, err := os.Stat(cfg.EntrypointPath); err != nil {
		return nil, fmt.Errorf("entrypoint binary: %w", err)
	} else if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("%w: entrypoint %s is not an executable file", build.ErrInvalid, cfg.EntrypointPath)
	}
	var err error
	// Absolute paths: the entrypoint runs in the build's directory.
	if cfg.RunDir, err = filepath.Abs(cfg.RunDir); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if cfg.BlobsDir != "" {
		if cfg.BlobsDir, err = filepath.Abs(cfg.BlobsDir); err != nil {
			return nil, fmt.Errorf("blobs directory: %w", err)
		}
	}
	if cfg.EntrypointPath, err = filepath.Abs(cfg.EntrypointPath); err != nil {
		return nil, fmt.Errorf("entrypoint path: %w", err)
	}
	if rel, err := filepath.Rel(SharedRunRoot, cfg.RunDir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		// The machine's directory of run directories (RunDirFor): build
		// users pass through it to their own, and list nothing.
		for _, d := range []string{filepath.Dir(SharedRunRoot), SharedRunRoot} {
			if err := os.MkdirAll(d, 0o711); err != nil {
				return nil, fmt.Errorf("create run directory: %w", err)
			}
			if err := os.Chmod(d, 0o711); err != nil {
				return nil, fmt.Errorf("run directory: %w", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	if cfg.Env == nil {
		for _, name := range []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR"} {
			if v, ok := os.LookupEnv(name); ok {
				cfg.Env = append(cfg.Env, name+"="+v)
			}
		}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.LaunchGrace <= 0 {
		cfg.LaunchGrace = DefaultLaunchGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Isolation == "" {
		cfg.Isolation = IsolationBestEffort
	}
	if cfg.BuildUIDs == (UIDRange{}) {
		cfg.BuildUIDs = UIDRange{DefaultFirstBuildUID, DefaultLastBuildUID}
	}
	e := &Executor{cfg: cfg, log: cfg.Logger}
	if err := e.setUpIsolation(); err != nil {
		return nil, err
	}
	// Searchable by the build users, not listable; 0700 when there are
	// none. Set every time: an older version made it 0755.
	mode := fs.FileMode(0o700)
	if e.isolated {
		mode = 0o711
	}
	if err := os.Chmod(cfg.RunDir, mode); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	e.sweep()
	return e, nil
}

// dir returns the build's directory after checking the ID, so that no ID
// reaches outside RunDir.
func (e *Executor) dir(id build.ID) (string, error) {
	if _, err := build.ParseID(string(id)); err != nil {
		return "", err
	}
	return filepath.Join(e.cfg.RunDir, id.PodName()), nil
}

// Launch starts the build, the local counterpart of creating its Pod.
//
// It is idempotent: when the build was launched already (its process runs
// or ran), it returns nil and starts nothing, also when another process
// launches it at the same moment, and also when the launcher that started
// it died before recording its pid. A launch that was interrupted before
// the process started (the launcher died) is completed. A build whose
// scripts cannot be exported is launched as ended: its result says
// errored, and Watch reports it; one that Cancel reached first is launched
// as cancelled. An error means nothing was started; the caller may retry.
//
// Launch returns once the build's process runs, is recorded, and takes a
// Cancel as a cancel. The process outlives the caller; Watch, in any
// process, sees its end.
func (e *Executor) Launch(ctx context.Context, job build.Job) error {
	req := job.Request
	dir, err := e.dir(req.BuildID)
	if err != nil {
		return err
	}
	if err := build.ValidateName("team", req.Team); err != nil {
		return err
	}
	if err := build.ValidateName("project", req.Project); err != nil {
		return err
	}
	if e.removed(req.BuildID) {
		return nil // launched, ended and removed
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("launch %s: %w", req.BuildID, err)
	}
	l, err := takeLock(ctx, dir)
	if err != nil {
		return fmt.Errorf("launch %s: %w", req.BuildID, err)
	}
	defer l.unlock()
	if ok, err := launched(dir); err != nil {
		return fmt.Errorf("launch %s: %w", req.BuildID, err)
	} else if ok {
		return nil
	}
	if e.removed(req.BuildID) {
		// Removed between the check above and the lock: the directory is
		// a fresh, empty one of this call's making.
		_ = removeAll(dir)
		return nil
	}
	if err := e.launch(ctx, dir, job); err != nil {
		return fmt.Errorf("launch %s: %w", req.BuildID, err)
	}
	return nil
}

// launched reports whether a process was started, or an end recorded, for
// the build in dir: a pid file, a result, or a live entrypoint that has not
// recorded itself yet. The caller holds the launch lock, so no launcher is
// at work on dir.
func launched(dir string) (bool, error) {
	for _, name := range []string{pidFile, ResultFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true, nil
		}
	}
	return aliveHeld(dir)
}

// runs reports whether the build's entrypoint runs: the recorded process
// lives or, while none is recorded, a process holds alive.lock.
func runs(dir string) (bool, error) {
	if p, err := readProcess(filepath.Join(dir, pidFile)); err == nil {
		return p.alive(), nil
	}
	return aliveHeld(dir)
}

// cancelRequested reports whether Cancel asked for the build while it was
// not running yet.
func cancelRequested(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, cancelFile))
	return err == nil
}

// launch does the work of Launch, under the launch lock, from any point an
// earlier launch was interrupted at.
func (e *Executor) launch(ctx context.Context, dir string, job build.Job) error {
	if err := writeJob(dir, job); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ConsoleLogFile), nil, 0o600); err != nil {
		return fmt.Errorf("create console log: %w", err)
	}
	if cancelRequested(dir) {
		return e.endUnstarted(dir, build.StatusCancelled, ReasonCancelledBeforeStart)
	}
	scripts := filepath.Join(dir, ScriptsDir)
	if err := removeAll(scripts); err != nil {
		return fmt.Errorf("clear scripts: %w", err)
	}
	if err := os.Mkdir(scripts, 0o700); err != nil {
		return fmt.Errorf("create scripts: %w", err)
	}
	req := job.Request
	if err := e.cfg.Scripts.Export(ctx, job.CatalogCommit, req.Team, req.Project, scripts); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("export build scripts: %w", err)
		}
		// Like a Pod whose checkout failed: launched, and ended.
		return e.endUnstarted(dir, build.StatusErrored, "export build scripts: "+err.Error())
	}
	uid := -1
	var s slot
	if e.isolated {
		var err error
		if s, err = e.takeUID(ctx); err != nil {
			return err
		}
		// The entrypoint inherits the lock; this process lets go of it
		// when the launch ends, however it ends.
		defer s.release()
		uid = s.uid
	}
	if err := e.prepareDirs(dir, uid); err != nil {
		return err
	}
	if err := writeSecrets(dir, uid, job.Secrets); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(dir, outFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create entrypoint output: %w", err)
	}
	defer out.Close()
	args := []string{"-run-dir", dir, "-handshake"}
	if e.isolated {
		args = append(args, "-build-uid", strconv.Itoa(uid))
	}
	if e.cfg.Uploads != nil {
		// Valid until the build's deadline, and the grace to upload after
		// it: no longer, so that a grant does not outlive its build.
		urls, err := e.cfg.Uploads(ctx, req.BuildID, job.BuildTimeout()+build.UploadGrace)
		if err != nil {
			return fmt.Errorf("presign uploads: %w", err)
		}
		if err := writeUploads(dir, urls); err != nil {
			return err
		}
	} else {
		args = append(args, "-blobs", e.cfg.BlobsDir)
	}
	// A Cancel that waited for this launch asked while the scripts were
	// exported: start nothing.
	if cancelRequested(dir) {
		return e.endUnstarted(dir, build.StatusCancelled, ReasonCancelledBeforeStart)
	}
	return e.start(ctx, dir, args, out, s.f)
}

// start starts decap-entrypoint in dir and does the launcher's half of the
// start-up handshake (see handshake.go). uidLock, if not nil, is the build
// uid's lock, for the entrypoint to hold.
func (e *Executor) start(ctx context.Context, dir string, args []string, out, uidLock *os.File) error {
	alive, err := lockAlive(ctx, dir)
	if err != nil {
		return err
	}
	defer alive.Close()
	recordedR, recordedW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start entrypoint: %w", err)
	}
	defer recordedR.Close()
	defer recordedW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start entrypoint: %w", err)
	}
	defer readyR.Close()
	defer readyW.Close()

	cmd := exec.Command(e.cfg.EntrypointPath, args...)
	cmd.Dir = dir
	cmd.Env = e.cfg.Env
	cmd.Stdout, cmd.Stderr = out, out // stdin is /dev/null
	// Descriptors aliveFD, recordedFD, readyFD and uidLockFD of the child.
	cmd.ExtraFiles = []*os.File{alive, recordedR, readyW}
	if uidLock != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, uidLock)
	}
	// Its own process group: a signal to the launcher's group (Ctrl-C)
	// does not reach the build.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start entrypoint: %w", err)
	}
	// The child holds alive.lock now; this process must not, or the lock
	// would outlive the child.
	alive.Close()
	recordedR.Close()
	readyW.Close()
	if e.crashAfterStart {
		// As if this process died here: its descriptors close, nothing
		// is recorded; only the reaping of the child stays.
		go cmd.Wait()
		return errors.New("launcher crashed after starting the entrypoint (test)")
	}
	pid := cmd.Process.Pid
	// The entrypoint has started nothing: it waits for recorded to close.
	// Its process group (pgid = pid) is all there is to stop.
	abort := func(err error) error {
		if kerr := syscall.Kill(-pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			e.log.Error("stop entrypoint", "pid", pid, "err", kerr)
		}
		cmd.Wait()
		return err
	}
	if err := awaitReady(ctx, readyR); err != nil {
		return abort(err)
	}
	// Not yet waited for, the child cannot vanish from /proc: it is at
	// worst a zombie, whose start time still reads.
	start, err := startTime(pid)
	if err == nil && e.pidWriteHook != nil {
		err = e.pidWriteHook()
	} else if err == nil {
		err = writeFileAtomic(filepath.Join(dir, pidFile), []byte(process{pid, start}.String()))
	}
	if err != nil {
		// Stopped before recorded closes, the entrypoint never ran the
		// build: the caller may retry.
		return abort(fmt.Errorf("record entrypoint pid: %w", err))
	}
	recordedW.Close() // the entrypoint may go
	go e.reap(cmd)    // and its end wakes the watchers
	return nil
}

// endUnstarted records the end of a build that never started.
func (e *Executor) endUnstarted(dir string, status build.Status, reason string) error {
	now := e.cfg.Now()
	if f, err := os.OpenFile(filepath.Join(dir, ConsoleLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintf(f, "decap: %s\n", reason)
		f.Close()
	}
	if _, err := writeResultOnce(dir, entrypoint.Result{Status: status, Reason: reason, StartedAt: now, FinishedAt: now}); err != nil {
		return err
	}
	e.notifyEnded()
	return nil
}

// Cancel stops the build: decap-entrypoint gets SIGTERM, stops the
// script's process group, uploads what there is and records the build as
// cancelled. A build being launched is waited for (until ctx is done) and
// then stopped; one whose launch has not started it yet is asked not to
// start, and one that was not started by then never is: it is recorded as
// cancelled, and Watch reports it. Should ctx end the wait, the launch
// still starts nothing if it had not started the build yet. Cancel gives
// build.ErrNotFound when the build has no directory (it was never launched,
// or ended and was removed) or has ended.
func (e *Executor) Cancel(ctx context.Context, id build.ID) error {
	dir, err := e.dir(id)
	if err != nil {
		return err
	}
	notFound := fmt.Errorf("cancel %s: %w", id, build.ErrNotFound)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return notFound
	}
	// Asked first, so that a launch in progress, which this call is about
	// to wait for, starts nothing; and so that the request stays should
	// ctx end the wait.
	if err := os.WriteFile(filepath.Join(dir, cancelFile), nil, 0o600); errors.Is(err, fs.ErrNotExist) {
		return notFound // removed meanwhile
	} else if err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	l, err := takeLock(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound
	}
	if err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	defer l.unlock()
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return notFound
	}
	for {
		p, err := readProcess(filepath.Join(dir, pidFile))
		if err == nil {
			if !p.alive() {
				return notFound
			}
			if err := syscall.Kill(p.pid, syscall.SIGTERM); errors.Is(err, syscall.ESRCH) {
				return notFound
			} else if err != nil {
				return fmt.Errorf("cancel %s: %w", id, err)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		held, err := aliveHeld(dir)
		if err != nil {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		if !held {
			break
		}
		// An entrypoint whose launcher died before recording it: it
		// records itself in a moment.
		select {
		case <-ctx.Done():
			return fmt.Errorf("cancel %s: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if res, err := readResult(dir); err == nil {
		if res.Status == build.StatusCancelled && res.Reason == ReasonCancelledBeforeStart {
			return nil // by this request, or an earlier one, before it started
		}
		return notFound // ended without running: its scripts could not be exported
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	// Nothing runs, and under the launch lock nothing starts: the result
	// makes every later Launch of the build a no-op.
	if err := e.endUnstarted(dir, build.StatusCancelled, ReasonCancelledBeforeStart); err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	return nil
}

// Remove deletes the build's directory, the counterpart of deleting its
// Pod. The caller must have recorded the build's end first: its live log
// and its Outcome are gone afterwards. Removing a missing build is not an
// error; removing a running one gives build.ErrConflict.
func (e *Executor) Remove(ctx context.Context, id build.ID) error {
	dir, err := e.dir(id)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	l, err := takeLock(ctx, dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	// Under the lock, so that a launch in progress is seen once it started
	// the build.
	if ok, err := runs(dir); ok || err != nil {
		l.unlock()
		if err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
		return fmt.Errorf("remove %s: %w: build is running", id, build.ErrConflict)
	}
	// First the tombstone, so no later Launch runs the build again; then
	// one atomic rename, so a crash never leaves a half-deleted directory
	// that looks like an interrupted launch; then the slow part.
	if err := e.writeTombstone(id); err != nil {
		l.unlock()
		return fmt.Errorf("remove %s: %w", id, err)
	}
	gone := filepath.Join(e.cfg.RunDir, removingPrefix+id.PodName())
	err = os.Rename(dir, gone)
	l.unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	if err := removeAll(gone); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

func (e *Executor) tombstone(id build.ID) string {
	return filepath.Join(e.cfg.RunDir, tombstoneDir, id.PodName())
}

func (e *Executor) removed(id build.ID) bool {
	_, err := os.Lstat(e.tombstone(id))
	return err == nil
}

func (e *Executor) writeTombstone(id build.ID) error {
	if err := os.MkdirAll(filepath.Join(e.cfg.RunDir, tombstoneDir), 0o700); err != nil {
		return err
	}
	return os.WriteFile(e.tombstone(id), nil, 0o600)
}

// sweep finishes removals a crash interrupted and forgets tombstones older
// than TombstoneTTL.
func (e *Executor) sweep() {
	entries, _ := os.ReadDir(e.cfg.RunDir)
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), removingPrefix) {
			if err := removeAll(filepath.Join(e.cfg.RunDir, ent.Name())); err != nil {
				e.log.Warn("finish removing a build directory", "dir", ent.Name(), "err", err)
			}
		}
	}
	stones, _ := os.ReadDir(filepath.Join(e.cfg.RunDir, tombstoneDir))
	for _, st := range stones {
		if info, err := st.Info(); err == nil && e.cfg.Now().Sub(info.ModTime()) > TombstoneTTL {
			_ = os.Remove(filepath.Join(e.cfg.RunDir, tombstoneDir, st.Name()))
		}
	}
}

// Running returns the builds whose process runs, oldest first.
func (e *Executor) Running(ctx context.Context) ([]build.ID, error) {
	ids, err := e.list()
	if err != nil {
		return nil, err
	}
	var running []build.ID
	for _, id := range ids {
		if ok, _ := runs(filepath.Join(e.cfg.RunDir, id.PodName())); ok {
			running = append(running, id)
		}
	}
	return running, nil
}

// OpenLiveLog opens the build's console log as it is being written; reading
// to EOF and again later follows it. It gives build.ErrNotFound when there
// is no such build (or it was removed).
func (e *Executor) OpenLiveLog(id build.ID) (io.ReadCloser, error) {
	dir, err := e.dir(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, ConsoleLogFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open live log %s: %w", id, build.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open live log %s: %w", id, err)
	}
	return f, nil
}

// list returns the IDs of the build directories in RunDir, oldest first.
func (e *Executor) list() ([]build.ID, error) {
	entries, err := os.ReadDir(e.cfg.RunDir)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	var ids []build.ID
	for _, ent := range entries { // ReadDir sorts by name: UUIDv7s by time
		name, ok := strings.CutPrefix(ent.Name(), "build-")
		if !ok || !ent.IsDir() {
			continue
		}
		if id, err := build.ParseID(name); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// removeAll is os.RemoveAll that also removes read-only directories, as
// builds leave them (Go's module cache, for one).
func removeAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// Present returns every build that has a directory, running or ended but
// not yet removed: the local counterpart of listing build Pods.
func (e *Executor) Present(ctx context.Context) ([]build.ID, error) {
	return e.list()
}
