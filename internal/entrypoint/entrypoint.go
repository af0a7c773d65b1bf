// Package entrypoint runs one build: it executes <team>/<project>/build.sh
// from a build-scripts checkout, keeps its console log, and uploads the log
// and the artifacts when the script ends, however it ends.
//
// The same code runs inside the build container (in a Kubernetes Pod) and
// under the embedded default's local executor; only the Uploader and the
// directories differ.
package entrypoint

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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Defaults for the zero values of Config.
const (
	DefaultKillGrace     = 5 * time.Second
	DefaultUploadBackoff = time.Second
	DefaultUploadTimeout = 10 * time.Minute
	// DefaultMaxTasks is the build user's RLIMIT_NPROC: room for a
	// parallel compile with many threads per process, far below the
	// machine's threads-max.
	DefaultMaxTasks = 4096
	// uploadAttempts is how often an upload is tried before it is reported
	// as failed.
	uploadAttempts = 3
	// drainWait bounds how long output is still read after the script and
	// its process group are gone; a process that escaped the group (setsid)
	// may hold the pipe open forever.
	drainWait = 5 * time.Second
)

// Uploader stores one object. The caller streams the content and retries on
// error; Put must read r to the end (or fail) and must not keep r after it
// returns. localfs.Blobs and HTTPUploader implement it.
type Uploader interface {
	Put(ctx context.Context, key string, r io.Reader) error
}

// Config describes one build run.
type Config struct {
	// ScriptsDir is the root of the build-scripts checkout; the script is
	// ScriptsDir/<Team>/<Project>/build.sh.
	ScriptsDir string
	Team       string
	Project    string
	Ref        string
	// SHA is the commit to build, exported as COMMIT_SHA when not empty.
	SHA string
	// PullRequest, for a pull request's build, is exported as the
	// PULL_REQUEST_* variables (build.PullRequest.Env): the script
	// fetches the head from PULL_REQUEST_REF (refs/pull/<N>/head) of the
	// base repository and checks out COMMIT_SHA.
	PullRequest *build.PullRequest

	BuildID build.ID
	// Workspace is the script's working directory; it is created if missing.
	Workspace string
	// ArtifactsDir is exported as BUILD_ARTIFACTS; what the script leaves
	// there is uploaded as a tarball. It is created if missing.
	ArtifactsDir string
	// SecretsDir, if set and present, holds the build's secrets, one file
	// per name: it is exported as BUILD_SECRETS, and every value (and its
	// encodings, see maskForms) is replaced by *** in the console log.
	SecretsDir string
	// LiveLog, if set, is a file the console log is written to while the
	// script runs, so it can be followed. It is truncated first.
	LiveLog string
	// LiveTimes, if set, is a file the log's line-time index
	// (build.LogTimes) is written to while the script runs, rewritten at
	// most once a second, so that a followed log can show when its lines
	// began. It is replaced, not appended to.
	LiveTimes string
	// Stdout, if set, also receives the console log. Its write errors are
	// ignored.
	Stdout io.Writer
	// Timeout is the build's deadline; zero means build.DefaultBuildTimeout.
	Timeout time.Duration
	// Uploader stores the log and the artifacts. Required.
	Uploader Uploader
	// Env is the base environment of the script; the build variables are
	// added to it, replacing entries of the same name.
	Env []string
	// KillGrace is the time between SIGTERM and SIGKILL when the build is
	// stopped; zero means DefaultKillGrace.
	KillGrace time.Duration
	// UploadBackoff is the wait before the second upload attempt, doubled
	// before the third; zero means DefaultUploadBackoff.
	UploadBackoff time.Duration
	// UploadTimeout bounds each upload, which runs even after ctx is done;
	// zero means DefaultUploadTimeout.
	UploadTimeout time.Duration
	// Credential, if set, is the user and group the script runs as, with
	// no supplementary groups (the local executor's build uid); this
	// process must be root to use it. Only files that user owns are then
	// taken into the artifacts.
	Credential *syscall.Credential
	// MaxTasks bounds the processes and threads the Credential's user may
	// have at once (RLIMIT_NPROC), so that a fork bomb in a build stops at
	// its own uid's limit instead of the machine's; zero means
	// DefaultMaxTasks. It applies only with a Credential: a user of the
	// build's own, whose tasks nobody else shares.
	MaxTasks int
	// AfterScript, if set, is called once the script has exited (or was
	// stopped) and its process group was killed, before the console log
	// is drained and the artifacts are read: it stops what else the script
	// left running, such as a process that left the group with setsid.
	// Its error is reported in the console log and the logs; the build's
	// status stays what the script made it.
	AfterScript func() error
	// OnStart, if set, is called with the script's pid, which is also its
	// process group ID, right after it started.
	OnStart func(pid int)
	Now     func() time.Time
	Logger  *slog.Logger
}

// Result is how a build ended. It is also the JSON of the local executor's
// result.json.
type Result struct {
	// Status is succeeded, failed, timed_out, cancelled or errored.
	Status build.Status `json:"status"`
	// ExitCode is the script's exit code, 128+n when signal n ended it; nil
	// when the script did not run.
	ExitCode *int `json:"exitCode,omitempty"`
	// Reason says why in words: "exit code 3", "deadline of 1h0m0s
	// exceeded", "cancelled", "build.sh not found at team/project/build.sh",
	// "upload log: ...". Several reasons are joined by "; ".
	Reason string `json:"reason,omitempty"`
	// StartedAt is when the script started (or Run, if it never did);
	// FinishedAt when it ended, before the uploads.
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	// LogKey and ArtifactsKey are the object keys, empty when that upload
	// failed. The log's line-time index goes under build.LogTimesKey
	// beside the log; its upload failing costs the build nothing but the
	// log's times, so it has no field here.
	LogKey       string `json:"logKey,omitempty"`
	ArtifactsKey string `json:"artifactsKey,omitempty"`
}

// stop says why Run stopped the script, if it did.
type stop int

const (
	stopNone stop = iota
	stopCancelled
	stopTimedOut
)

// Run runs the build described by cfg and returns how it ended. It does not
// return before the script's process group is gone and the uploads are done
// or have failed.
//
// When ctx is done or the Timeout passes, the script's process group gets
// SIGTERM and, KillGrace later, SIGKILL; the status is cancelled or
// timed_out. Otherwise the exit code decides: 0 is succeeded, anything else
// failed. A script that cannot start (invalid names, no build.sh) is
// errored. In every case where the build ID is valid, the console log, which
// ends with a "decap: ..." line saying what happened, and a tarball of
// ArtifactsDir are uploaded, each tried three times; an upload that still
// fails is named in Reason, its key is left empty, and a succeeded build
// becomes errored, because its outputs are missing.
func Run(ctx context.Context, cfg Config) Result {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = build.DefaultBuildTimeout
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.UploadBackoff <= 0 {
		cfg.UploadBackoff = DefaultUploadBackoff
	}
	if cfg.UploadTimeout <= 0 {
		cfg.UploadTimeout = DefaultUploadTimeout
	}
	r := &runner{cfg: cfg, log: cfg.Logger.With("build_id", string(cfg.BuildID))}
	return r.run(ctx)
}

type runner struct {
	cfg     Config
	log     *slog.Logger
	console *consoleWriter
	// secrets are the values of the build's secrets, masked in its log.
	secrets [][]byte
}

func (r *runner) run(ctx context.Context) Result {
	res := Result{StartedAt: r.cfg.Now()}
	if _, err := build.ParseID(string(r.cfg.BuildID)); err != nil {
		// Without a valid ID there are no object keys to upload to.
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, err.Error(), r.cfg.Now()
		return res
	}
	if r.cfg.Uploader == nil {
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, "no uploader configured", r.cfg.Now()
		return res
	}

	logPath, cleanup, err := r.openConsole()
	if err != nil {
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, err.Error(), r.cfg.Now()
		return res
	}
	defer cleanup()
	r.console.Line(fmt.Sprintf("decap: build %s of %s %s%s", r.cfg.BuildID,
		build.ProjectKey(r.cfg.Team, r.cfg.Project), r.cfg.Ref, atSHA(r.cfg.SHA)))

	var footer string
	secrets, err := readSecrets(r.cfg.SecretsDir)
	r.secrets = secrets
	if err != nil {
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, err.Error(), r.cfg.Now()
		footer = "decap: " + res.Reason
	} else if script, err := r.prepare(); err != nil {
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, err.Error(), r.cfg.Now()
		footer = "decap: " + res.Reason
	} else {
		res.StartedAt = r.cfg.Now()
		footer = r.execute(ctx, script, &res)
	}
	r.console.Line(footer)

	// The uploads must happen even when ctx is done: that is how a
	// cancelled build's log is kept.
	uctx := context.WithoutCancel(ctx)
	var reasons []string
	if res.Reason != "" {
		reasons = append(reasons, res.Reason)
	}
	artifactsKey := build.ArtifactsKey(r.cfg.BuildID)
	var skipped int
	owner := anyOwner
	if r.cfg.Credential != nil {
		owner = int(r.cfg.Credential.Uid)
	}
	err = r.upload(uctx, artifactsKey, func(w io.Writer) error {
		n, err := writeArtifacts(w, r.cfg.ArtifactsDir, owner)
		skipped = n
		return err
	})
	if err != nil {
		reasons = append(reasons, "upload artifacts: "+err.Error())
		r.console.Line("decap: upload artifacts failed: " + err.Error())
	} else {
		res.ArtifactsKey = artifactsKey
		if skipped > 0 {
			r.console.Line(fmt.Sprintf("decap: %d artifact(s) were left out: only regular files and directories are kept, symbolic links are not followed%s", skipped, ownOnly(r.cfg.Credential)))
		}
	}
	if err := r.console.Close(); err != nil {
		reasons = append(reasons, "write console log: "+err.Error())
	}
	times, err := r.console.times.close()
	if err != nil {
		r.log.Warn("live line times", "err", err)
	}
	logKey := build.LogKey(r.cfg.BuildID)
	if err := r.upload(uctx, logKey, func(w io.Writer) error { return gzipFile(w, logPath) }); err != nil {
		reasons = append(reasons, "upload log: "+err.Error())
	} else {
		res.LogKey = logKey
		// Only the log's times: a failure is logged, the build's status
		// stays.
		if err := r.upload(uctx, build.LogTimesKey(r.cfg.BuildID), func(w io.Writer) error { return writeTimes(w, times) }); err != nil {
			r.log.Warn("upload the log's line times", "err", err)
		}
	}
	if (res.LogKey == "" || res.ArtifactsKey == "") && res.Status == build.StatusSucceeded {
		res.Status = build.StatusErrored
	}
	res.Reason = strings.Join(reasons, "; ")
	return res
}

// openConsole opens the console log: LiveLog, or a temporary file. It
// returns the file's path and a function that removes a temporary file.
func (r *runner) openConsole() (string, func(), error) {
	var f *os.File
	var err error
	cleanup := func() {}
	if r.cfg.LiveLog != "" {
		if err := os.MkdirAll(filepath.Dir(r.cfg.LiveLog), 0o755); err != nil {
			return "", nil, fmt.Errorf("create console log: %w", err)
		}
		f, err = os.OpenFile(r.cfg.LiveLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	} else {
		f, err = os.CreateTemp("", "decap-console-*.log")
		if err == nil {
			name := f.Name()
			cleanup = func() { os.Remove(name) }
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("create console log: %w", err)
	}
	r.console = &consoleWriter{file: f, tee: r.cfg.Stdout, last: '\n', now: r.cfg.Now,
		times: newLineTimes(r.cfg.Now(), r.cfg.LiveTimes)}
	return f.Name(), cleanup, nil
}

// prepare validates the names, finds build.sh and creates the directories.
// Its errors are what the user sees as the reason of an errored build, so
// they name paths relative to the scripts checkout only.
func (r *runner) prepare() (string, error) {
	if err := build.ValidateName("team", r.cfg.Team); err != nil {
		return "", err
	}
	if err := build.ValidateName("project", r.cfg.Project); err != nil {
		return "", err
	}
	if err := build.ValidateRef(r.cfg.Ref); err != nil {
		return "", err
	}
	if info, err := os.Stat(r.cfg.ScriptsDir); r.cfg.ScriptsDir == "" || err != nil || !info.IsDir() {
		return "", errors.New("build scripts checkout is missing")
	}
	rel := r.cfg.Team + "/" + r.cfg.Project + "/build.sh"
	script := filepath.Join(r.cfg.ScriptsDir, r.cfg.Team, r.cfg.Project, "build.sh")
	info, err := os.Stat(script)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return "", fmt.Errorf("build.sh not found at %s", rel)
	case err != nil:
		return "", fmt.Errorf("build.sh at %s cannot be read", rel)
	case !info.Mode().IsRegular():
		return "", fmt.Errorf("build.sh at %s is not a regular file", rel)
	}
	for _, dir := range []string{r.cfg.Workspace, r.cfg.ArtifactsDir} {
		if dir == "" {
			return "", errors.New("workspace or artifacts directory not configured")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("prepare directories: %w", err)
		}
	}
	return script, nil
}

// execute runs the script to its end, fills res, and returns the footer
// line for the console log.
func (r *runner) execute(ctx context.Context, script string, res *Result) string {
	pr, pw, err := os.Pipe()
	if err != nil {
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, fmt.Sprintf("start build.sh: %v", err), r.cfg.Now()
		return "decap: " + res.Reason
	}
	cmd := exec.Command("bash", script)
	cmd.Dir = r.cfg.Workspace
	cmd.Env = r.env()
	// One pipe for both streams keeps stdout and stderr in order; an
	// *os.File is handed to the child as is, so Wait does not wait for
	// background processes that inherited it.
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.cfg.Credential}
	closeInheritedOnExec()
	if r.cfg.Credential != nil {
		// Inherited by the script; this process, root, is exempt from it.
		if err := limitTasks(r.cfg.MaxTasks); err != nil {
			pr.Close()
			pw.Close()
			res.Status, res.Reason, res.FinishedAt = build.StatusErrored, fmt.Sprintf("limit the build user's processes: %v", err), r.cfg.Now()
			return "decap: " + res.Reason
		}
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		res.Status, res.Reason, res.FinishedAt = build.StatusErrored, fmt.Sprintf("start build.sh: %v", err), r.cfg.Now()
		return "decap: " + res.Reason
	}
	pgid := cmd.Process.Pid
	if r.cfg.OnStart != nil {
		r.cfg.OnStart(pgid)
	}
	drained := make(chan struct{})
	masked := newMasker(r.console, r.secrets)
	go func() {
		defer close(drained)
		io.Copy(masked, pr) // console never fails a write; see consoleWriter
		masked.Flush()
	}()

	why := r.wait(ctx, cmd, pgid)
	res.FinishedAt = r.cfg.Now()
	// Whatever the script left running in its group goes with it, as it
	// would when a container ends; what left the group goes too, if
	// AfterScript can find it.
	r.signalGroup(pgid, syscall.SIGKILL)
	var afterErr error
	if r.cfg.AfterScript != nil {
		if afterErr = r.cfg.AfterScript(); afterErr != nil {
			r.log.Error("stop what the build script left running", "err", afterErr)
		}
	}
	select {
	case <-drained:
	case <-time.After(drainWait):
		pr.Close()
		<-drained
	}
	pr.Close()
	if afterErr != nil { // after the drain: the console has one writer at a time
		r.console.Line("decap: could not stop what build.sh left running: " + afterErr.Error())
	}

	if cmd.ProcessState == nil {
		// Wait failed without reaping, which Linux does not do to a child
		// of ours; say so rather than guess an exit code.
		res.Status, res.Reason = build.StatusErrored, "exit status of build.sh lost"
		return "decap: " + res.Reason
	}
	elapsed := formatDuration(res.FinishedAt.Sub(res.StartedAt))
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	code, ended := exitCode(ws)
	res.ExitCode = &code
	switch why {
	case stopTimedOut:
		res.Status = build.StatusTimedOut
		res.Reason = fmt.Sprintf("deadline of %s exceeded", r.cfg.Timeout)
		return fmt.Sprintf("decap: deadline of %s exceeded; build.sh stopped after %s", r.cfg.Timeout, elapsed)
	case stopCancelled:
		res.Status = build.StatusCancelled
		res.Reason = "cancelled"
		return fmt.Sprintf("decap: build cancelled; build.sh stopped after %s", elapsed)
	}
	if code == 0 {
		res.Status = build.StatusSucceeded
	} else {
		res.Status = build.StatusFailed
		res.Reason = ended
	}
	if ws.Signaled() {
		return fmt.Sprintf("decap: build.sh was %s after %s", ended, elapsed)
	}
	return fmt.Sprintf("decap: build.sh exited with code %d after %s", code, elapsed)
}

// limitTasks sets this process's RLIMIT_NPROC to n (zero: DefaultMaxTasks)
// for the children it starts under a build user. The kernel counts the
// tasks of the child's real uid against it; root, this process, is not
// held to it.
func limitTasks(n int) error {
	if n <= 0 {
		n = DefaultMaxTasks
	}
	lim := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
	return syscall.Setrlimit(rlimitNPROC, &lim)
}

// closeInheritedOnExec marks every descriptor of this process above
// standard error close-on-exec, so that build.sh inherits none of them:
// Go opens its own so, but os/exec passes on any other, and one this
// process inherited without the flag (from whatever started the services:
// a wrapper's log file, a supervisor's pipe) would reach the script and
// everything it starts. Outside Linux (no /proc/self/fd) it does nothing.
func closeInheritedOnExec() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, ent := range entries {
		if fd, err := strconv.Atoi(ent.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd) // a descriptor closed meanwhile: EBADF, no harm
		}
	}
}

// rlimitNPROC is RLIMIT_NPROC on Linux, which package syscall does not
// name.
const rlimitNPROC = 6

// wait waits for the script to exit, stopping its process group when ctx
// is done or the deadline passes, and says which of these happened first.
func (r *runner) wait(ctx context.Context, cmd *exec.Cmd, pgid int) stop {
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // the exit status is read from cmd.ProcessState
		close(exited)
	}()
	deadline := time.NewTimer(r.cfg.Timeout)
	defer deadline.Stop()
	done := ctx.Done()
	var kill <-chan time.Time
	why := stopNone
	for {
		select {
		case <-exited:
			return why
		case <-done:
			why = stopCancelled
		case <-deadline.C:
			why = stopTimedOut
		case <-kill:
			r.signalGroup(pgid, syscall.SIGKILL)
			kill = nil
			continue
		}
		// Stopping: either cause, once.
		done = nil
		deadline.Stop()
		r.signalGroup(pgid, syscall.SIGTERM)
		kill = time.After(r.cfg.KillGrace)
	}
}

func (r *runner) signalGroup(pgid int, sig syscall.Signal) {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		r.log.Error("signal build process group", "pgid", pgid, "signal", sig.String(), "err", err)
	}
}

// env is the base environment with the build variables set.
func (r *runner) env() []string {
	vars := map[string]string{
		"BUILD_ID":        string(r.cfg.BuildID),
		"PROJECT_KEY":     build.ProjectKey(r.cfg.Team, r.cfg.Project),
		"BRANCH_TO_BUILD": r.cfg.Ref,
		"BUILD_ARTIFACTS": r.cfg.ArtifactsDir,
	}
	if r.cfg.SHA != "" {
		vars["COMMIT_SHA"] = r.cfg.SHA
	}
	if r.secrets != nil {
		vars["BUILD_SECRETS"] = r.cfg.SecretsDir
	}
	env := make([]string, 0, len(r.cfg.Env)+len(vars)+len(build.PullRequestEnvNames))
	for _, kv := range r.cfg.Env {
		name, _, _ := strings.Cut(kv, "=")
		if _, ours := vars[name]; ours || name == "COMMIT_SHA" || name == "BUILD_SECRETS" || slices.Contains(build.PullRequestEnvNames, name) {
			continue
		}
		env = append(env, kv)
	}
	for _, name := range []string{"BUILD_ID", "PROJECT_KEY", "BRANCH_TO_BUILD", "COMMIT_SHA", "BUILD_ARTIFACTS", "BUILD_SECRETS"} {
		if v, ok := vars[name]; ok {
			env = append(env, name+"="+v)
		}
	}
	if p := r.cfg.PullRequest; p != nil {
		for _, v := range p.Env() {
			env = append(env, v.Name+"="+v.Value)
		}
	}
	return env
}

// exitCode returns the exit code, 128+n for signal n as shells report it,
// and the reason it stands for.
func exitCode(ws syscall.WaitStatus) (int, string) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return ws.ExitStatus(), fmt.Sprintf("exit code %d", ws.ExitStatus())
}

func ownOnly(c *syscall.Credential) string {
	if c == nil {
		return ""
	}
	return ", and only the build user's own files"
}

func atSHA(sha string) string {
	if sha == "" {
		return ""
	}
	return " at " + sha
}

// formatDuration rounds d for people: 2.1s, 1m3.2s, 12ms.
func formatDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// consoleWriter writes the console log to its file and, if set, to tee,
// and keeps its line-time index. It never fails a write, so the script is
// never blocked on a full pipe; the first file error is kept for Close.
type consoleWriter struct {
	file  *os.File
	tee   io.Writer
	err   error
	last  byte
	now   func() time.Time
	times *lineTimes
}

func (c *consoleWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.err == nil {
		_, c.err = c.file.Write(p)
	}
	if c.tee != nil {
		c.tee.Write(p) // a broken tee must not break the build
	}
	c.times.wrote(p, c.now())
	c.last = p[len(p)-1]
	return len(p), nil
}

// Line writes s as a line of its own.
func (c *consoleWriter) Line(s string) {
	if c.last != '\n' {
		c.Write([]byte{'\n'})
	}
	c.Write([]byte(s + "\n"))
}

// Close syncs and closes the file and returns the first write error.
func (c *consoleWriter) Close() error {
	if err := c.file.Sync(); err != nil && c.err == nil {
		c.err = err
	}
	if err := c.file.Close(); err != nil && c.err == nil {
		c.err = err
	}
	return c.err
}
