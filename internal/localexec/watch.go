package localexec

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// Reasons of the outcomes Watch makes up for builds that left no result,
// and of a build that Cancel stopped before it started.
const (
	ReasonNoResult             = "entrypoint process exited without a result"
	ReasonLaunchInterrupted    = "launch interrupted"
	ReasonCancelledBeforeStart = "cancelled before the build started"
)

// Watch calls handle with the Outcome of every build that has ended, until
// ctx is done; then it returns nil. It scans RunDir at once, which
// reconciles builds that ended while nobody watched; again as soon as a
// launcher, in this process or another, says that a build's process ended
// (see wake.go); and every PollInterval, which finds the ends nobody said.
//
// A build has ended when decap-entrypoint, or a launch or Cancel that did
// not start it, wrote its result; when its process is gone without one
// (killed, crashed), which gives an errored Outcome and stops what is left
// of the script; or when its launch was interrupted and LaunchGrace has
// passed, also errored. Running builds are left alone: their recorded
// process lives or, with none recorded yet, their alive.lock is held.
//
// handle is called again on every scan until the build is removed, so it
// must be idempotent and should end with Remove. Its errors are logged and
// the build is retried on the next scan, a second later at the latest.
func (e *Executor) Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error {
	// Bound before the first scan: an end after it is either seen by the
	// scan or wakes the next one.
	wake, stop, err := e.listenEnds()
	if err != nil {
		e.log.Warn("builds' ends are found by polling only", "poll_interval", e.cfg.PollInterval, "err", err)
	} else {
		defer stop()
	}
	ticker := time.NewTicker(e.cfg.PollInterval)
	defer ticker.Stop()
	for {
		var retry <-chan time.Time // nil, never ready, unless a handle failed
		if failed := e.scan(ctx, handle); failed {
			retry = time.After(handleRetry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-wake: // nil, never ready, without a socket
		case <-retry:
		}
	}
}

// handleRetry is how soon Watch scans again after a handle failed, unless
// the poll or a wake-up comes first.
const handleRetry = time.Second

// scan hands every ended build to handle; failed says whether one of
// them failed, or the scan did.
func (e *Executor) scan(ctx context.Context, handle func(context.Context, build.Outcome) error) (failed bool) {
	ids, err := e.list()
	if err != nil {
		e.log.Error("scan builds", "err", err)
		return true
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return false
		}
		log := e.log.With("build_id", string(id))
		o, ended, err := e.inspect(id)
		if err != nil {
			log.Error("inspect build", "err", err)
			failed = true
			continue
		}
		if !ended {
			continue
		}
		log = log.With("lock_key", o.LockKey())
		if err := handle(ctx, o); err != nil {
			log.Error("handle build outcome", "status", string(o.Status), "err", err)
			failed = true
		}
	}
	return failed
}

// inspect decides whether the build has ended and, if so, how.
func (e *Executor) inspect(id build.ID) (build.Outcome, bool, error) {
	dir := filepath.Join(e.cfg.RunDir, id.PodName())
	p, err := readProcess(filepath.Join(dir, pidFile))
	switch {
	case err == nil:
		// Liveness first, result second: a process seen dead cannot
		// write its result afterwards.
		if p.alive() {
			return build.Outcome{}, false, nil
		}
		res, err := readResult(dir)
		if errors.Is(err, fs.ErrNotExist) {
			e.stopScript(dir)
			if res, err = e.synthesize(dir, ReasonNoResult, modTime(filepath.Join(dir, pidFile))); err != nil {
				return build.Outcome{}, false, err
			}
		} else if err != nil {
			return build.Outcome{}, false, err
		}
		return e.outcome(id, dir, res), true, nil
	case !errors.Is(err, fs.ErrNotExist):
		return build.Outcome{}, false, err
	}

	// No process was recorded: launching; launched, and the entrypoint
	// about to record itself because its launcher died first; launched as
	// ended (the scripts could not be exported, or it was cancelled first);
	// or the launcher died before starting it. Liveness first, as above.
	if held, err := aliveHeld(dir); err != nil || held {
		return build.Outcome{}, false, err
	}
	res, err := readResult(dir)
	if err == nil {
		return e.outcome(id, dir, res), true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return build.Outcome{}, false, err
	}
	info, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) { // removed meanwhile
			return build.Outcome{}, false, nil
		}
		return build.Outcome{}, false, err
	}
	if e.cfg.Now().Sub(info.ModTime()) < e.cfg.LaunchGrace {
		return build.Outcome{}, false, nil
	}
	l, ok, err := tryLock(dir)
	if err != nil || !ok {
		return build.Outcome{}, false, err // a launcher is at work
	}
	defer l.unlock()
	if ok, err := launched(dir); err != nil || ok {
		return build.Outcome{}, false, err // it finished meanwhile; next scan
	}
	// Recorded under the lock, so a late Launch of this build finds it
	// ended and starts nothing.
	if res, err = e.synthesize(dir, ReasonLaunchInterrupted, time.Time{}); err != nil {
		return build.Outcome{}, false, err
	}
	return e.outcome(id, dir, res), true, nil
}

// synthesize records an errored result for a build that left none, and
// returns the recorded result: the first one, if another scan won.
func (e *Executor) synthesize(dir, reason string, started time.Time) (entrypoint.Result, error) {
	now := e.cfg.Now()
	if started.IsZero() {
		started = now
	}
	if _, err := writeResultOnce(dir, entrypoint.Result{
		Status:     build.StatusErrored,
		Reason:     reason,
		StartedAt:  started,
		FinishedAt: now,
	}); err != nil {
		return entrypoint.Result{}, err
	}
	return readResult(dir)
}

// stopScript kills what is left of the build script's process group after
// decap-entrypoint died. The group is signalled only while it is provably
// the script's: its leader still runs with the recorded start time, or no
// process holds the leader's pid, which Linux does not give out again while
// the group has members.
func (e *Executor) stopScript(dir string) {
	defer e.stopStrays(dir) // and, under a build uid, what left the group
	p, err := readProcess(filepath.Join(dir, scriptPIDFile))
	if err != nil {
		return // the script never started, or its pid is unknown
	}
	if _, _, err := procStat(p.pid); err == nil && !p.exists() {
		return // the pid belongs to another process now
	}
	if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		e.log.Error("stop orphaned build script", "dir", filepath.Base(dir), "err", err)
	}
}

// outcome turns a result into the build's Outcome, with the names from
// job.json; those stay empty if the launch was interrupted before it was
// written.
func (e *Executor) outcome(id build.ID, dir string, res entrypoint.Result) build.Outcome {
	o := build.Outcome{
		BuildID:      id,
		PodName:      id.PodName(),
		Status:       res.Status,
		ExitCode:     res.ExitCode,
		Reason:       res.Reason,
		StartedAt:    res.StartedAt,
		FinishedAt:   res.FinishedAt,
		LogKey:       res.LogKey,
		ArtifactsKey: res.ArtifactsKey,
	}
	if job, err := ReadJob(dir); err == nil {
		o.Team, o.Project, o.Ref = job.Request.Team, job.Request.Project, job.Request.Ref
	}
	o.Infra = infra(dir, res)
	switch o.Status {
	case build.StatusSucceeded, build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored:
	default: // not a status a build run ends with
		o.Infra = ""

		o.Status = build.StatusErrored
		o.Reason = "result has status " + string(res.Status)
	}
	return o
}

// infra classifies how the build in dir ended (see build.InfraCause):
// what the entrypoint's result tells (an upload failed, build.sh killed by
// a signal Decap did not send); an entrypoint that died without a result
// (Decap never kills it: Cancel asks it to stop with SIGTERM) or was stopped
// while no Cancel asked for it (no cancel file); an interrupted launch.
func infra(dir string, res entrypoint.Result) build.InfraCause {
	switch {
	case res.Status == build.StatusErrored && res.Reason == ReasonNoResult:
		return build.InfraKilled
	case res.Status == build.StatusErrored && res.Reason == ReasonLaunchInterrupted:
		return build.InfraLaunchInterrupted
	case res.Status == build.StatusCancelled && !cancelRequested(dir):
		return build.InfraKilled
	}
	return res.Infra()
}

func modTime(path string) time.Time {
	info, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return info.ModTime()
}
