package localexec_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/localfs"
)

// buildTempDir is t.TempDir(), made reachable by build users when builds
// run under their own (the tests run as root): Go makes every test's
// temporary directory 0700.
func buildTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if localexec.Isolates() {
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shareFile creates path for build scripts of any user to append to.
func shareFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if !localexec.Isolates() {
		t.Skip("builds run under uids of their own only when Decap runs as root; run the tests as root (CI does) to test it")
	}
}

// testUIDs returns a range of n build uids of the test's own, outside the
// default range and every other test's: flocks in localexec.UIDLockDir keep
// one uid to one build across all executors on the machine, so a test that
// needs to know which uids are free keeps to its own.
func testUIDs(first, n int) localexec.UIDRange {
	return localexec.UIDRange{First: first, Last: first + n - 1}
}

// envOf is the env of an executor whose RunDir and BlobsDir are run/ and
// blobs/ in tmp.
func envOf(t *testing.T, ex *localexec.Executor, tmp string) env {
	t.Helper()
	blobs, err := localfs.NewBlobs(filepath.Join(tmp, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return env{ex: ex, blobs: blobs, run: filepath.Join(tmp, "run"), tmp: tmp}
}

// identity is what a build script prints with identityScript.
type identity struct {
	uid, gid, groups, home, tmp, pwd string
}

const identityScript = `echo "identity $(id -u) $(id -g) $(id -G | tr ' ' ,) $HOME $TMPDIR $PWD"`

func parseIdentity(t *testing.T, log string) identity {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if f := strings.Fields(line); len(f) == 7 && f[0] == "identity" {
			return identity{f[1], f[2], f[3], f[4], f[5], f[6]}
		}
	}
	t.Fatalf("no identity line in the log:\n%s", log)
	return identity{}
}

// mode returns path's permissions, owner and group.
func mode(t *testing.T, path string) (os.FileMode, int, int) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	return info.Mode().Perm(), int(st.Uid), int(st.Gid)
}

// TestBuildRunsUnderItsOwnUID: two builds running at once get uids of
// their own from the range, no other group, HOME and TMPDIR in their own
// directory; neither reaches the other's workspace (made readable by all),
// the run directory's listing, its own result, log or scripts. Every mode
// of the layout in isolate.go is checked while it runs and after.
func TestBuildRunsUnderItsOwnUID(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	uids := testUIDs(1_899_000_000, 4)
	tmp := buildTempDir(t)
	run := filepath.Join(tmp, "run")
	scripts := fakeScripts{"holder": identityScript + `
echo secret > secret.txt; chmod 0644 secret.txt; chmod 0755 .
echo ready; sleep 30`}
	ex, err := localexec.New(localexec.Config{
		RunDir: run, BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: scripts, PollInterval: 50 * time.Millisecond, BuildUIDs: uids,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := envOf(t, ex, tmp)
	c := e.watch(t)
	holder := newJob("holder", time.Minute)
	if err := ex.Launch(t.Context(), holder); err != nil {
		t.Fatal(err)
	}
	e.waitLog(t, holder.Request.BuildID, "ready")
	hdir := e.dir(holder.Request.BuildID)
	scripts["prober"] = identityScript + fmt.Sprintf(`
cat %[1]q/workspace/secret.txt && echo "LEAK read the other build's workspace"
ls %[2]q && echo "LEAK listed the run directory"
echo forged > ../result.json && echo "LEAK wrote its result"
echo forged >> ../console.log && echo "LEAK wrote its log file"
echo forged >> ../scripts/acme/prober/build.sh && echo "LEAK wrote its scripts"
kill -0 $(cat %[1]q/pid) && echo "LEAK may signal the other build's entrypoint"
cat /proc/$(cat %[1]q/pid)/environ && echo "LEAK read the other build's entrypoint's environ"
true`, hdir, run)
	prober := newJob("prober", time.Minute)
	if err := ex.Launch(t.Context(), prober); err != nil {
		t.Fatal(err)
	}
	pdir := e.dir(prober.Request.BuildID)
	o := c.outcome(t, prober.Request.BuildID)
	if o.Status != build.StatusSucceeded {
		t.Fatalf("prober: %+v, want succeeded", o)
	}
	plog := string(e.readBlob(t, o.LogKey))
	if strings.Contains(plog, "LEAK") {
		t.Errorf("the prober reached what is not its own:\n%s", plog)
	}
	hid, pid := parseIdentity(t, e.liveLog(t, holder.Request.BuildID)), parseIdentity(t, plog)
	for _, tc := range []struct {
		name string
		id   identity
		dir  string
	}{{"holder", hid, hdir}, {"prober", pid, pdir}} {
		uid, err := strconv.Atoi(tc.id.uid)
		if err != nil || !uids.Contains(uid) || tc.id.gid != tc.id.uid || tc.id.groups != tc.id.uid {
			t.Errorf("%s ran as uid %s gid %s groups %s; want a uid of %s, its gid, no other group", tc.name, tc.id.uid, tc.id.gid, tc.id.groups, uids)
		}
		if tc.id.home != filepath.Join(tc.dir, localexec.HomeDir) || tc.id.tmp != filepath.Join(tc.dir, localexec.TmpDir) || tc.id.pwd != filepath.Join(tc.dir, localexec.WorkspaceDir) {
			t.Errorf("%s: HOME %s, TMPDIR %s, PWD %s; want home/, tmp/ and workspace/ of %s", tc.name, tc.id.home, tc.id.tmp, tc.id.pwd, tc.dir)
		}
	}
	if hid.uid == pid.uid {
		t.Errorf("both builds ran as uid %s at once", hid.uid)
	}

	// The layout, the holder running, the prober ended.
	huid, _ := strconv.Atoi(hid.uid)
	puid, _ := strconv.Atoi(pid.uid)
	root := os.Geteuid()
	for _, tc := range []struct {
		path       string
		perm       os.FileMode
		uid, group int
	}{
		{run, 0o711, root, -1},
		{localexec.UIDLockDir, 0o700, 0, 0},
		{hdir, 0o710, root, huid},
		{filepath.Join(hdir, localexec.ScriptsDir), 0o750, root, huid},
		{filepath.Join(hdir, localexec.ScriptsDir, "acme", "holder", "build.sh"), 0o640, root, huid},
		{filepath.Join(hdir, localexec.WorkspaceDir), 0o755, huid, huid}, // the script's chmod
		{filepath.Join(hdir, localexec.ArtifactsDir), 0o700, huid, huid},
		{filepath.Join(hdir, localexec.HomeDir), 0o700, huid, huid},
		{filepath.Join(hdir, localexec.TmpDir), 0o700, huid, huid},
		{filepath.Join(hdir, localexec.ConsoleLogFile), 0o600, root, -1},
		{filepath.Join(hdir, localexec.ConsoleTimesFile), 0o600, root, -1},
		{filepath.Join(hdir, localexec.JobFile), 0o600, root, -1},
		{filepath.Join(hdir, "pid"), 0o600, root, -1},
		{filepath.Join(hdir, "entrypoint.out"), 0o600, root, -1},
		{pdir, 0o700, root, puid}, // ended: closed to its uid
		{filepath.Join(pdir, localexec.ResultFile), 0o600, root, -1},
	} {
		perm, uid, gid := mode(t, tc.path)
		if perm != tc.perm || uid != tc.uid || tc.group >= 0 && gid != tc.group {
			t.Errorf("%s: mode %#o, owner %d:%d; want %#o, %d:%d", tc.path, perm, uid, gid, tc.perm, tc.uid, tc.group)
		}
	}
	if err := ex.Cancel(t.Context(), holder.Request.BuildID); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome(t, holder.Request.BuildID); o.Status != build.StatusCancelled {
		t.Errorf("holder: %+v, want cancelled", o)
	}
	// Removal, as the reaper does it, also of what the build made
	// read-only.
	for _, id := range []build.ID{holder.Request.BuildID, prober.Request.BuildID} {
		if err := ex.Remove(t.Context(), id); err != nil {
			t.Errorf("Remove %s: %v", id, err)
		}
	}
}

// TestBuildUIDsTakenAndReleased: with one uid in the range, a second build
// cannot launch while the first runs, in this executor or another one (as
// in another dispatcher); once the first ended, the second gets the same
// uid.
func TestBuildUIDsTakenAndReleased(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	uids := testUIDs(1_899_000_100, 1)
	tmp := buildTempDir(t)
	release := filepath.Join(tmp, "release")
	cfg := localexec.Config{
		RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{
			"first":  identityScript + fmt.Sprintf("\necho ready; while [ ! -e %q ]; do sleep 0.05; done", release),
			"second": identityScript,
		},
		PollInterval: 50 * time.Millisecond, BuildUIDs: uids,
	}
	ex, err := localexec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other, err := localexec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := envOf(t, ex, tmp)
	c := e.watch(t)
	first, second := newJob("first", time.Minute), newJob("second", time.Minute)
	if err := ex.Launch(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	e.waitLog(t, first.Request.BuildID, "ready")
	for name, x := range map[string]*localexec.Executor{"this executor": ex, "another executor": other} {
		if err := x.Launch(t.Context(), second); err == nil || !strings.Contains(err.Error(), "no free build uid") {
			t.Errorf("Launch in %s while the only uid is taken: %v, want no free build uid", name, err)
		}
		if _, err := os.Stat(filepath.Join(e.dir(second.Request.BuildID), "pid")); err == nil {
			t.Fatalf("Launch in %s started the second build without a uid", name)
		}
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := c.outcome(t, first.Request.BuildID)
	if err := other.Launch(t.Context(), second); err != nil {
		t.Fatalf("Launch after the first build ended: %v", err)
	}
	o2 := c.outcome(t, second.Request.BuildID)
	if o.Status != build.StatusSucceeded || o2.Status != build.StatusSucceeded {
		t.Fatalf("outcomes %+v, %+v; want both succeeded", o, o2)
	}
	id1, id2 := parseIdentity(t, string(e.readBlob(t, o.LogKey))), parseIdentity(t, string(e.readBlob(t, o2.LogKey)))
	if id1.uid != strconv.Itoa(uids.First) || id2.uid != id1.uid {
		t.Errorf("the builds ran as uids %s and %s, want both %d", id1.uid, id2.uid, uids.First)
	}
}

// TestStrayProcessesStopped: what a build leaves running outside its
// process group (setsid, so the group kill misses it) is killed when the
// build ends; and when the entrypoint itself dies, Watch kills it.
func TestStrayProcessesStopped(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, tc := range []struct {
		name string
		kill bool // SIGKILL the entrypoint once the build is ready
	}{
		{"build ends", false},
		{"entrypoint dies", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmp := buildTempDir(t)
			release := filepath.Join(tmp, "release")
			script := fmt.Sprintf(`setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$HOME/stray"; echo ready
while [ ! -e %q ]; do sleep 0.05; done`, release)
			ex, err := localexec.New(localexec.Config{
				RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
				Scripts: fakeScripts{"s": script}, PollInterval: 50 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			e := envOf(t, ex, tmp)
			job := newJob("s", time.Minute)
			id := job.Request.BuildID
			if err := ex.Launch(t.Context(), job); err != nil {
				t.Fatal(err)
			}
			e.waitLog(t, id, "ready")
			p := readPID(t, filepath.Join(e.dir(id), localexec.HomeDir, "stray"))
			t.Cleanup(func() { syscall.Kill(p, syscall.SIGKILL) })
			if gone(p) {
				t.Fatal("the stray process is gone at once; the test proves nothing")
			}
			if tc.kill {
				if err := syscall.Kill(readPID(t, filepath.Join(e.dir(id), "pid")), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(release, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			c := e.watch(t)
			c.outcome(t, id)
			waitFor(t, "the stray process to be stopped", func() bool { return gone(p) })
		})
	}
}

// TestStopUID: decap-entrypoint -stop-uid kills every process of the uid,
// also one in a session of its own, and none of another uid.
func TestStopUID(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	victims := testUIDs(1_899_000_200, 2)
	start := func(uid int) *exec.Cmd {
		cmd := exec.Command("setsid", "sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	target, bystander := start(victims.First), start(victims.Last)
	waited := make(chan struct{})
	go func() { target.Wait(); close(waited) }()
	if err := localexec.RunStopUID(t.Context(), entrypointPath, victims.First); err != nil {
		t.Fatalf("RunStopUID: %v", err)
	}
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatal("the process of the stopped uid still runs")
	}
	if gone(bystander.Process.Pid) {
		t.Error("the process of another uid was stopped too")
	}
	if err := localexec.RunStopUID(t.Context(), entrypointPath, 0); err == nil {
		t.Error("RunStopUID of root: no error")
	}
}

// signalAllEnv makes the test binary signalAll instead of running tests.
const signalAllEnv = "LOCALEXEC_TEST_SIGNAL_ALL"

// signalAll is a build process that fights its uid's stop: on several
// threads at once it SIGKILLs every other process its user may signal
// (kill(-1), which spares the caller), so that whatever turns into its
// user to stop it dies first.
func signalAll() {
	for range 3 {
		go func() {
			runtime.LockOSThread()
			for {
				syscall.Kill(-1, syscall.SIGKILL)
			}
		}()
	}
	for {
		syscall.Kill(-1, syscall.SIGKILL)
	}
}

// TestStopUIDOutlastsAFightingBuild: a build process that SIGKILLs every
// other process of its uid in a loop cannot kill what stops it, nor so
// outlive its build: RunStopUID succeeds and the process is gone, every
// time. (The stopper once turned into the build's user to signal it, and
// in that moment the build could kill it first: about one stop in three
// failed, and the build ran on.)
func TestStopUIDOutlastsAFightingBuild(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	uid := testUIDs(1_899_000_300, 1).First
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	// Where the build user may run it: go test's own directory is closed.
	exe := filepath.Join(buildTempDir(t), "fighter")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	for round := range 10 {
		var cmd *exec.Cmd
		for attempt := 0; ; attempt++ {
			cmd = exec.Command(exe)
			cmd.Env = []string{signalAllEnv + "=1"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
			err := cmd.Start()
			if err == nil {
				break
			}
			// ETXTBSY: a process another test forked while exe was open
			// for writing holds it until that process execs (golang.org/issue/22315).
			if !errors.Is(err, syscall.ETXTBSY) || attempt == 100 {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-waited })
		time.Sleep(50 * time.Millisecond) // fighting by now
		err := localexec.RunStopUID(t.Context(), entrypointPath, uid)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: the fighting process of the stopped uid still runs (RunStopUID: %v)", round, err)
		}
		if err != nil {
			t.Fatalf("round %d: RunStopUID: %v", round, err)
		}
	}
}

// TestNewChecksRunDirReachable: as root, New refuses a run directory that
// build users cannot reach, naming the directory to fix.
func TestNewChecksRunDirReachable(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tmp := t.TempDir() // its parent is 0700
	_, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{},
	})
	if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), filepath.Dir(tmp)+" (mode 0700)") {
		t.Errorf("New: %v, want ErrInvalid naming %s", err, filepath.Dir(tmp))
	}
}

// TestNotIsolatedWarns: without root, New runs builds as this user and
// warns once, naming what a build can reach; IsolationRequired refuses.
func TestNotIsolatedWarns(t *testing.T) {
	t.Parallel()
	if localexec.Isolates() {
		t.Skip("runs as root, where builds are isolated; the warning is for other users")
	}
	tmp := t.TempDir()
	var mu sync.Mutex
	var logged strings.Builder
	cfg := localexec.Config{
		RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{}, Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)),
	}
	if _, err := localexec.New(cfg); err != nil {
		t.Fatal(err)
	}
	if got := logged.String(); strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, "data directory") {
		t.Errorf("log of New: %q, want one warning naming what builds can reach", got)
	}
	cfg.Isolation = localexec.IsolationRequired
	if _, err := localexec.New(cfg); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("New with IsolationRequired: %v, want ErrInvalid", err)
	}
	if mode, _, _ := mode(t, cfg.RunDir); mode != 0o700 {
		t.Errorf("run directory: mode %#o, want 0700", mode)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestUIDsOwnedByNobody: build uids, and StopperUID, which stops their
// processes, must belong to no user or group of the passwd file.
func TestUIDsOwnedByNobody(t *testing.T) {
	t.Parallel()
	r := localexec.UIDRange{First: 1_900_000_000, Last: 1_900_000_999}
	for _, tc := range []struct {
		name, passwd, err string
	}{
		{name: "none", passwd: "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"},
		{name: "user in range", passwd: "ci:x:1900000005:100::/:/bin/sh\n", err: `1900000005, which user "ci"`},
		{name: "group in range", passwd: "ci:x:100:1900000999::/:/bin/sh\n", err: `1900000999, which user "ci"`},
		{name: "stopper", passwd: "max:x:2147483647:100::/:/bin/sh\n", err: `2147483647, which user "max"`},
		{name: "stopper group", passwd: "max:x:100:2147483647::/:/bin/sh\n", err: `2147483647, which user "max"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "passwd")
			if err := os.WriteFile(path, []byte(tc.passwd), 0o600); err != nil {
				t.Fatal(err)
			}
			err := localexec.OwnedByNobody(r, path)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.err != "" && (!errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %v, want ErrInvalid naming %s", err, tc.err)
			}
		})
	}
}

// TestNewRefusesUIDsOfUsers: build uids that /etc/passwd gives to a user
// (here nobody, 65534) are refused: their processes would be killed.
func TestNewRefusesUIDsOfUsers(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	data, _ := os.ReadFile("/etc/passwd")
	if !strings.Contains(string(data), ":65534:") {
		t.Skip("/etc/passwd has no user 65534 here")
	}
	tmp := buildTempDir(t)
	_, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(tmp, "run"), BlobsDir: filepath.Join(tmp, "blobs"), EntrypointPath: entrypointPath,
		Scripts: fakeScripts{}, BuildUIDs: localexec.UIDRange{First: 65000, Last: 65999},
	})
	if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), "65534") {
		t.Errorf("New with uid 65534 in the range: %v, want ErrInvalid naming it", err)
	}
}

// TestStopUIDsOneAfterAnother: stops of different uids queue for the
// stopper lock, one at a time running as StopperUID, and every one
// succeeds. A stopper that let go of the lock before its process ended
// could be SIGKILLed by the next one's kill(-1) (both run as real user
// StopperUID), and its stop reported as failed though it had succeeded.
func TestStopUIDsOneAfterAnother(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	uids := testUIDs(1_899_000_400, 4)
	var wg sync.WaitGroup
	for uid := uids.First; uid <= uids.Last; uid++ {
		wg.Go(func() {
			for round := range 50 {
				if err := localexec.RunStopUID(t.Context(), entrypointPath, uid); err != nil {
					t.Errorf("uid %d, round %d: RunStopUID: %v", uid, round, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
