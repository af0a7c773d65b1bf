package localexec

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Builds under users of their own.
//
// When this process runs as root, every build script runs as a uid taken
// for it alone from Config.BuildUIDs, with the gid of the same number and
// no supplementary groups: a user that owns nothing of Decap's and that no
// other running build has. The services and decap-entrypoint stay root, so
// the script cannot read their files or /proc, signal or ptrace them, and
// it cannot reach another running build's processes or files either.
//
// A uid is taken with an exclusive flock on UIDLockDir/<uid> (root's,
// 0700), which the launcher passes to decap-entrypoint and the entrypoint
// holds until it ends. The directory is the machine's, not the data
// directory's: any number of dispatchers, also of different installations
// (and tests running side by side), share the uids without giving one out
// twice or killing each other's builds. Before a uid is given to a build,
// every process still running as it is killed (what an earlier build left
// when its entrypoint died) and earlier build directories of its group are
// closed to it; when the build ends, the entrypoint kills every process of
// the uid (also what escaped the process group with setsid) and closes the
// build's directory to it.
//
// Layout and modes, with B the build's uid and gid:
//
//	<DataDir>            root 0711: searchable, not listable; all else
//	                     in it is root's, 0700 or 0600
//	<RunDir>             root 0711
//	build-<id>/          root:B 0710 while the build runs, 0700 after:
//	                     B reaches its own directory and no other
//	  scripts/           root:B, 0750 directories, 0640 files (0750 if
//	                     executable): readable, not writable
//	  workspace/ artifacts/ home/ tmp/
//	                     B's, 0700
//	  secrets/           B's, 0700, its files 0400 (only when the build
//	                     was granted secrets)
//	  everything else    root's, 0600: job.json, the log, the result, the
//	                     pid files, uploads.json, locks
//
// Without root there is no other user to run builds as: they run as this
// process's user and can reach all it can; New says so in a warning, or,
// with IsolationRequired, refuses.

// Isolation says what the executor does when it cannot run builds under
// users of their own.
type Isolation string

const (
	// IsolationBestEffort runs builds under their own uids when this
	// process runs as root, and otherwise as its user, warning at start.
	// It is the default: a developer's `make run` needs no root.
	IsolationBestEffort Isolation = "best-effort"
	// IsolationRequired makes New fail unless builds run under their own
	// uids.
	IsolationRequired Isolation = "required"
)

// The default build uids: in the range systemd leaves unused
// (1879048192-2147483647; "Users, Groups, UIDs and GIDs on systemd
// Systems"), below 2^31 so that no tool takes them for negative numbers,
// and far above what useradd and /etc/subuid hand out. A thousand builds
// may run at once.
const (
	DefaultFirstBuildUID = 1_900_000_000
	DefaultLastBuildUID  = 1_900_000_999
)

// UIDRange is an inclusive range of uids, each also used as a gid.
type UIDRange struct{ First, Last int }

// Contains reports whether uid is in the range.
func (r UIDRange) Contains(uid int) bool { return r.First <= uid && uid <= r.Last }

func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// maxBuildUID keeps build uids below 2^31 - 1: tools that read uid_t as a
// signed 32-bit number, and (uid_t)-1, are never met.
const maxBuildUID = 1<<31 - 2

// Validate reports a range that cannot hold build uids: empty, starting
// at root, or past maxBuildUID.
func (r UIDRange) Validate() error {
	if r.First < 1 || r.Last < r.First || r.Last > maxBuildUID {
		return fmt.Errorf("%w: build uids %s: want first-last with 1 <= first <= last <= %d", build.ErrInvalid, r, maxBuildUID)
	}
	return nil
}

// Isolates reports whether executors in this process run builds under
// users of their own: whether it runs as root.
func Isolates() bool { return os.Geteuid() == 0 }

// UIDLockDir holds a lock file per build uid, shared by every executor on
// the machine; /run is root's and emptied at boot, as the locks are.
const UIDLockDir = "/run/decap/build-uids"

// HomeDir and TmpDir, in a build's directory, are the script's HOME and
// TMPDIR.
const (
	HomeDir = "home"
	TmpDir  = "tmp"
)

// stopUIDTimeout bounds how long StopUID keeps killing.
const stopUIDTimeout = 10 * time.Second

// strayLockWait bounds how long stopStrays waits for a dead build's uid
// lock.
const strayLockWait = 2 * time.Second

// setUpIsolation checks, for New, that builds can run under their own
// uids, or decides what to do instead; it sets e.isolated.
func (e *Executor) setUpIsolation() error {
	switch e.cfg.Isolation {
	case IsolationBestEffort, IsolationRequired:
	default:
		return fmt.Errorf("%w: build isolation %q: want %s or %s", build.ErrInvalid, e.cfg.Isolation, IsolationBestEffort, IsolationRequired)
	}
	if !Isolates() {
		if e.cfg.Isolation == IsolationRequired {
			return fmt.Errorf("%w: builds cannot run under users of their own: this process runs as uid %d, not root", build.ErrInvalid, os.Geteuid())
		}
		e.log.Warn("builds run as this service's own user: a build can read and change everything this user can — the data directory with the database, every build's logs and artifacts and any secret kept there, other builds' directories — and signal the services; run Decap as root to give each build a user of its own, or set DECAP_BUILD_ISOLATION=required to refuse to run builds like this",
			"uid", os.Geteuid(), "run_dir", e.cfg.RunDir)
		return nil
	}
	if err := e.cfg.BuildUIDs.Validate(); err != nil {
		return err
	}
	if err := ownedByNobody(e.cfg.BuildUIDs, passwdFile); err != nil {
		return err
	}
	if err := searchableByOthers(e.cfg.RunDir); err != nil {
		return err
	}
	if err := os.MkdirAll(UIDLockDir, 0o700); err != nil {
		return fmt.Errorf("build uid locks: %w", err)
	}
	if err := os.Chmod(UIDLockDir, 0o700); err != nil {
		return fmt.Errorf("build uid locks: %w", err)
	}
	e.isolated = true
	return nil
}

// passwdFile is the user database ownedByNobody reads.
const passwdFile = "/etc/passwd"

// ownedByNobody refuses build uids, and StopperUID, that belong to a user
// or group in the passwd file: every process of a build uid is killed when
// the uid is given to a build, and whatever the user owns would be the
// build's; StopperUID's processes would be killed with them. (Users only
// a directory service knows are not seen; the README asks for uids that
// own nothing.) An unreadable file is not an error.
func ownedByNobody(r UIDRange, passwd string) error {
	data, err := os.ReadFile(passwd)
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		for _, id := range f[2:4] { // uid, gid
			n, err := strconv.Atoi(id)
			switch {
			case err != nil:
			case r.Contains(n):
				return fmt.Errorf("%w: build uids %s include %d, which user %q of %s has: a build uid must own nothing, and its processes are killed when it is given to a build", build.ErrInvalid, r, n, f[0], passwd)
			case n == StopperUID:
				return fmt.Errorf("%w: uid %d, which user %q of %s has, is the one Decap stops build processes as: it must own nothing, and its processes are killed with a build's", build.ErrInvalid, n, f[0], passwd)
			}
		}
	}
	return nil
}

// SharedRunRoot holds the run directories of data directories that build
// users cannot reach (see RunDirFor).
const SharedRunRoot = "/var/lib/decap/run"

// RunDirFor returns the run directory of the data directory dataDir:
// <dataDir>/run, unless builds run under users of their own (Isolates)
// and a directory above dataDir is closed to other users — a checkout
// under /root, say, which is 0700 — so that no build could reach its own
// directory there. Then it is SharedRunRoot/<a hash of dataDir>, the same
// for every service of the installation and distinct per data directory.
// inside reports whether the run directory is in dataDir (which must then
// be searchable by the build users).
func RunDirFor(dataDir string) (dir string, inside bool) {
	dir = filepath.Join(dataDir, "run")
	if !Isolates() {
		return dir, true
	}
	real, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		real = dataDir
	}
	if aboveSearchable(real) == nil {
		return dir, true
	}
	sum := sha256.Sum256([]byte(real))
	return filepath.Join(SharedRunRoot, hex.EncodeToString(sum[:8])), false
}

// searchableByOthers checks that a build user can reach dir: every
// directory above it must be searchable by other users (o+x).
func searchableByOthers(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if err := aboveSearchable(real); err != nil {
		return fmt.Errorf("%w: builds run under users of their own cannot reach the run directory %s: %v; chmod o+x it, or set DECAP_RUN_DIR elsewhere", build.ErrInvalid, dir, err)
	}
	return nil
}

// aboveSearchable checks that every existing directory above path is
// searchable by other users (o+x).
func aboveSearchable(path string) error {
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %#o) is not searchable by other users", p, info.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// slot is a build uid taken for one build: the open, flocked
// <RunDir>/.uids/<uid>. The entrypoint inherits the lock; the launcher
// closes its descriptor once the entrypoint started, or when the launch
// failed.
type slot struct {
	uid int
	f   *os.File
}

func (s slot) release() {
	if s.f != nil {
		s.f.Close()
	}
}

// tryUID takes uid's lock if no build holds it; ok is false if one does.
func (e *Executor) tryUID(uid int) (s slot, ok bool, err error) {
	f, err := os.OpenFile(filepath.Join(UIDLockDir, strconv.Itoa(uid)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return slot{}, false, fmt.Errorf("open build uid lock: %w", err)
	}
	ok, err = flock(f, syscall.LOCK_EX)
	if err != nil || !ok {
		f.Close()
		if err != nil {
			return slot{}, false, fmt.Errorf("lock build uid %d: %w", uid, err)
		}
		return slot{}, false, nil
	}
	return slot{uid: uid, f: f}, true, nil
}

// uidWait bounds how long takeUID waits for a uid when every one is
// taken: a build's outcome is reported just before its entrypoint exits
// and lets go of its uid, so a launch right after an end may find the
// uid held for a moment.
const uidWait = 2 * time.Second

// takeUID takes the lowest free build uid for a build, after killing what
// still runs as it and closing older build directories of its group to it.
// A uid whose processes cannot be killed is skipped. When every uid is
// taken it tries again for up to uidWait.
func (e *Executor) takeUID(ctx context.Context) (slot, error) {
	deadline := time.Now().Add(uidWait)
	for {
		s, err := e.takeFreeUID(ctx)
		if err == nil || !errors.Is(err, errNoFreeUID) || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return slot{}, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// errNoFreeUID: every build uid is taken by a running build.
var errNoFreeUID = errors.New("no free build uid")

// takeFreeUID is one pass of takeUID over the range.
func (e *Executor) takeFreeUID(ctx context.Context) (slot, error) {
	r := e.cfg.BuildUIDs
	for uid := r.First; uid <= r.Last; uid++ {
		s, ok, err := e.tryUID(uid)
		if err != nil {
			return slot{}, err
		}
		if !ok {
			continue
		}
		if err := e.stopUID(ctx, uid); err != nil {
			s.release()
			if ctx.Err() != nil {
				return slot{}, err
			}
			e.log.Error("build uid skipped: its processes could not be stopped", "uid", uid, "err", err)
			continue
		}
		e.closeOldDirs(uid)
		return s, nil
	}
	return slot{}, fmt.Errorf("%w: all of %s are taken by running builds", errNoFreeUID, r)
}

// stopUID kills every process of uid, through decap-entrypoint -stop-uid
// (StopUID): a process that signals as that user is the one that can
// signal them all at once, and this one must stay root.
func (e *Executor) stopUID(ctx context.Context, uid int) error {
	return RunStopUID(ctx, e.cfg.EntrypointPath, uid)
}

// RunStopUID runs `exe -stop-uid uid` (decap-entrypoint's StopUID) and
// waits for it. The caller runs as root and holds uid's lock, so that no
// build of that uid is running, or it is the caller's own build, whose
// script has ended.
func RunStopUID(ctx context.Context, exe string, uid int) error {
	ctx, cancel := context.WithTimeout(ctx, stopperLockWait+stopUIDTimeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-stop-uid", strconv.Itoa(uid))
	cmd.Env = []string{}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stop processes of uid %d: %w: %s", uid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// StopperUID is the real and saved uid of StopUID while it signals a build
// uid's processes as that uid (its effective uid): those processes cannot
// signal it back, since they may signal only processes whose real or saved
// uid is theirs. It is never a build uid (maxBuildUID is below it), lies in
// the range systemd leaves unused, and must own nothing, as build uids
// must; no other process runs as it.
const StopperUID = 1<<31 - 1

// stopperLock, in UIDLockDir, lets one StopUID at a time run as
// StopperUID: kill(-1) by one would kill another.
const stopperLock = "stopper"

// stopperHeld keeps the stopper lock of this process's StopUID open (and
// its file from the collector) until the process exits.
var stopperHeld *os.File

// stopperLockWait bounds how long StopUID waits for another to finish.
const stopperLockWait = 2 * stopUIDTimeout

// StopUID is the body of `decap-entrypoint -stop-uid N`, which the
// executor and the entrypoint run as root: it turns this process into
// real and saved user StopperUID with effective user uid, and group
// StopperUID with no other groups, and SIGKILLs every process of user uid
// until none is left. kill(-1) signals every process the caller may
// signal, at once (no fork slips through): with these uids, exactly the
// processes whose real or saved uid is uid (and StopperUID's, of which
// there are none but this one, which kill(-1) spares). They cannot signal
// this process in turn: had it become uid wholly, a build process that
// SIGKILLs everything it can in a loop would kill it before it struck,
// and run on. Zombies, which only their parent can remove, do not count.
// The process is good for nothing else afterwards.
func StopUID(uid int) error {
	if uid < 1 || uid == StopperUID {
		return fmt.Errorf("%w: stop uid %d: not a build uid", build.ErrInvalid, uid)
	}
	deadline := time.Now().Add(stopUIDTimeout)
	lock, err := lockStopper(time.Now().Add(stopperLockWait))
	if err != nil {
		return fmt.Errorf("stop uid %d: %w", uid, err)
	}
	// Held until the process has ended: never closed, the kernel lets go
	// of it at the exit. The next StopUID, also of real user StopperUID,
	// may signal this process, and its kill(-1) would SIGKILL one that let
	// go of the lock and had yet to exit: a stop done, reported failed.
	stopperHeld = lock
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("stop uid %d: setgroups: %w", uid, err)
	}
	if err := syscall.Setresgid(StopperUID, StopperUID, StopperUID); err != nil {
		return fmt.Errorf("stop uid %d: setresgid: %w", uid, err)
	}
	if err := syscall.Setresuid(StopperUID, uid, StopperUID); err != nil {
		return fmt.Errorf("stop uid %d: setresuid: %w", uid, err)
	}
	for {
		err := syscall.Kill(-1, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return nil // nothing left to signal
		}
		if err != nil {
			return fmt.Errorf("stop uid %d: kill: %w", uid, err)
		}
		live, err := liveProcesses(uid)
		if err != nil {
			return fmt.Errorf("stop uid %d: %w", uid, err)
		}
		if live == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stop uid %d: %d processes still run after %s", uid, live, stopUIDTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockStopper takes the exclusive flock on UIDLockDir/stopperLock, waiting
// for another StopUID until deadline.
func lockStopper(deadline time.Time) (*os.File, error) {
	if err := os.MkdirAll(UIDLockDir, 0o700); err != nil {
		return nil, fmt.Errorf("stopper lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(UIDLockDir, stopperLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stopper lock: %w", err)
	}
	for {
		ok, err := flock(f, syscall.LOCK_EX)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stopper lock: %w", err)
		}
		if ok {
			return f, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, errors.New("stopper lock: another stop still runs")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// liveProcesses counts the processes, zombies aside and this one aside,
// whose real or saved uid is uid: the ones StopUID signals.
func liveProcesses(uid int) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	n := 0
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		state, real, saved, err := procUIDs(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if state != "Z" && (real == uid || saved == uid) {
			n++
		}
	}
	return n, nil
}

// procUIDs reads the state and the real and saved uids of a process from
// /proc/<pid>/status, which anyone may read, dumpable or not.
func procUIDs(pid int) (state string, real, saved int, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", 0, 0, err
	}
	defer f.Close()
	real, saved = -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		switch {
		case k == "State" && len(f) > 0:
			state = f[0]
		case k == "Uid" && len(f) >= 3:
			real, _ = strconv.Atoi(f[0])
			saved, _ = strconv.Atoi(f[2])
		}
	}
	if real < 0 {
		return "", 0, 0, fmt.Errorf("/proc/%d/status: no Uid line", pid)
	}
	return state, real, saved, sc.Err()
}

// closeOldDirs takes group access to build directories of group uid away:
// a build whose entrypoint died before it did so left its directory open
// to the next build of that uid.
func (e *Executor) closeOldDirs(uid int) {
	entries, _ := os.ReadDir(e.cfg.RunDir)
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), "build-") {
			continue
		}
		p := filepath.Join(e.cfg.RunDir, ent.Name())
		info, err := os.Lstat(p)
		if err != nil || !info.IsDir() {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Gid) == uid && info.Mode().Perm()&0o070 != 0 {
			if err := os.Chmod(p, 0o700); err != nil {
				e.log.Error("close an old build directory to its uid", "dir", ent.Name(), "err", err)
			}
		}
	}
}

// prepareDirs creates the script's directories in the build directory dir
// and gives them to uid (a build uid, or -1 when builds run as this
// process's user); see the layout above.
func (e *Executor) prepareDirs(dir string, uid int) error {
	for _, sub := range []string{WorkspaceDir, ArtifactsDir, HomeDir, TmpDir} {
		p := filepath.Join(dir, sub)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", sub, err)
		}
		if uid >= 0 {
			// Empty: nothing has run in it (a launch that started the
			// build never comes here again).
			if err := os.Lchown(p, uid, uid); err != nil {
				return fmt.Errorf("give %s to the build uid: %w", sub, err)
			}
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", sub, err)
		}
	}
	if uid < 0 {
		return os.Chmod(dir, 0o700)
	}
	if err := shareScripts(filepath.Join(dir, ScriptsDir), uid); err != nil {
		return err
	}
	if err := os.Chown(dir, os.Geteuid(), uid); err != nil {
		return fmt.Errorf("give the build directory to the build uid's group: %w", err)
	}
	return os.Chmod(dir, 0o710)
}

// shareScripts makes the exported scripts readable, not writable, by group
// gid: whatever the exporter's modes and umask were.
func shareScripts(scripts string, gid int) error {
	err := filepath.WalkDir(scripts, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, os.Geteuid(), gid); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return os.Chmod(p, 0o750)
		case info.Mode().IsRegular() && info.Mode().Perm()&0o100 != 0:
			return os.Chmod(p, 0o750)
		case info.Mode().IsRegular():
			return os.Chmod(p, 0o640)
		}
		return nil // a symbolic link has no mode of its own
	})
	if err != nil {
		return fmt.Errorf("share the build scripts with the build uid: %w", err)
	}
	return nil
}

// stopStrays kills what a build whose entrypoint died left running under
// its uid (the build directory's group), unless another build holds the
// uid by now: that one killed them when it took the uid. A dead
// entrypoint's lock may stay held for a moment after its main thread
// shows as a zombie (its other threads still exit), so a held lock is
// tried again for up to strayLockWait.
func (e *Executor) stopStrays(dir string) {
	if !e.isolated {
		return
	}
	info, err := os.Stat(dir)
	if err != nil {
		return
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || !e.cfg.BuildUIDs.Contains(int(st.Gid)) {
		return
	}
	var s slot
	for deadline := time.Now().Add(strayLockWait); ; {
		var ok bool
		s, ok, err = e.tryUID(int(st.Gid))
		if err != nil {
			e.log.Error("stop what a dead build left running", "dir", filepath.Base(dir), "err", err)
			return
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return // another build's now
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer s.release()
	if err := e.stopUID(context.Background(), s.uid); err != nil {
		e.log.Error("stop what a dead build left running", "dir", filepath.Base(dir), "err", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		e.log.Error("close a dead build's directory to its uid", "dir", filepath.Base(dir), "err", err)
	}
}
