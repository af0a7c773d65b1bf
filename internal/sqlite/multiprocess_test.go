package sqlite_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/sqlite"
)

// The tests here open one database file several times, as the dispatcher,
// ingest and reaper processes do, and in child processes.

// wokenWithin bounds how long a Receive woken from another Open may take; the
// receivers here recheck the database only every minute, so only a wake-up
// makes them return in time.
const wokenWithin = 5 * time.Second

func openPath(t *testing.T, path string, opts sqlite.Options) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(path, opts)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return db
}

func TestTwoOpensKeepLocksAndCap(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(time.Time{})
	path := filepath.Join(t.TempDir(), "decap.db")
	db1 := openPath(t, path, sqlite.Options{Now: clock.Now})
	db2 := openPath(t, path, sqlite.Options{Now: clock.Now})
	buildtest.CheckConcurrentLocks(t, []buildtest.Locks{sqlite.NewLocks(db1), sqlite.NewLocks(db2)}, clock)
}

func TestReceiveIsWokenByAnotherOpen(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		wakeDir func(t *testing.T) string
		// setup returns what, done through the other Open, makes a message
		// receivable.
		setup func(t *testing.T, other *sqlite.Queue) func()
	}{
		{
			name: "publish",
			setup: func(t *testing.T, other *sqlite.Queue) func() {
				return func() { publishOne(t, other, "main") }
			},
		},
		{
			name: "change visibility zero",
			setup: func(t *testing.T, other *sqlite.Queue) func() {
				publishOne(t, other, "main")
				m := receiveOne(t, other)
				return func() {
					if err := other.ChangeVisibility(t.Context(), m.Receipt, 0); err != nil {
						t.Errorf("ChangeVisibility() error = %v", err)
					}
				}
			},
		},
		{
			name: "delete of the group's first message",
			setup: func(t *testing.T, other *sqlite.Queue) func() {
				publishOne(t, other, "main")
				publishOne(t, other, "main")
				m := receiveOne(t, other)
				return func() {
					if err := other.Delete(t.Context(), m.Receipt); err != nil {
						t.Errorf("Delete() error = %v", err)
					}
				}
			},
		},
		{
			name: "publish with a wake directory path too long to bind",
			wakeDir: func(t *testing.T) string {
				return filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
			},
			setup: func(t *testing.T, other *sqlite.Queue) func() {
				return func() { publishOne(t, other, "main") }
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := sqlite.Options{}
			if tc.wakeDir != nil {
				opts.WakeDir = tc.wakeDir(t)
			}
			path := filepath.Join(t.TempDir(), "decap.db")
			slow := sqlite.QueueOptions{RecheckInterval: time.Minute}
			waiting := sqlite.NewQueue(openPath(t, path, opts), slow)
			other := sqlite.NewQueue(openPath(t, path, opts), slow)
			trigger := tc.setup(t, other)

			type result struct {
				msgs []build.Message
				err  error
			}
			done := make(chan result, 1)
			go func() {
				msgs, err := waiting.Receive(t.Context(), 10, time.Minute)
				done <- result{msgs, err}
			}()
			time.Sleep(200 * time.Millisecond) // let Receive bind its socket and wait
			trigger()
			select {
			case res := <-done:
				if res.err != nil || len(res.msgs) != 1 {
					t.Fatalf("Receive() = %d messages, error %v; want 1 message", len(res.msgs), res.err)
				}
			case <-time.After(wokenWithin):
				t.Fatalf("Receive() not woken within %v", wokenWithin)
			}
		})
	}
}

func TestStaleWakeSocketsAreRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stale := filepath.Join(dir, "wake", "0000000000000000.sock")
	db := openPath(t, filepath.Join(dir, "decap.db"), sqlite.Options{})
	// A socket file whose process is gone: bound, then closed.
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stale, Net: "unixgram"})
	if err != nil {
		t.Fatalf("ListenUnixgram() error = %v", err)
	}
	c.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket file missing before the test: %v", err)
	}
	publishOne(t, sqlite.NewQueue(db, sqlite.QueueOptions{}), "main")
	deadline := time.Now().Add(wokenWithin)
	for {
		if _, err := os.Stat(stale); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale socket %s still there %v after a publish", stale, wokenWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	clock := buildtest.NewClock(time.Time{})
	db, err := sqlite.Open(path, sqlite.Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	l := build.Lease{Key: "t/p/main", BuildID: build.NewID(clock.Now()), Owner: "o", AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	if err := sqlite.NewLocks(db).Acquire(t.Context(), l, 1); err != nil {
		t.Fatalf("Acquire() error = %v", err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("no write-ahead log after a write: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	again := openPath(t, path, sqlite.Options{Now: clock.Now})
	got, err := sqlite.NewLocks(again).List(t.Context())
	if err != nil {
		t.Fatalf("List() error = %v", err)
	}
	if diff := cmp.Diff([]build.Lease{l}, got); diff != "" {
		t.Errorf("List() after reopening (-want +got):\n%s", diff)
	}
}

// TestChildProcesses runs lock workers in two child processes (this test
// binary, re-run as helperProcess) against one database, while the parent
// waits in Receive for a message that one child publishes when it is done.
func TestChildProcesses(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("running as a child")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	q := sqlite.NewQueue(openPath(t, path, sqlite.Options{}), sqlite.QueueOptions{RecheckInterval: time.Minute})

	children := make([]*exec.Cmd, 2)
	outputs := make([]strings.Builder, len(children))
	for i := range children {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+path, fmt.Sprintf("DECAP_SQLITE_CHILD_INDEX=%d", i))
		cmd.Stdout, cmd.Stderr = &outputs[i], &outputs[i]
		if err := cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		children[i] = cmd
	}
	// Child 0 publishes one message per finished worker loop; wait for them.
	msgs, err := q.Receive(t.Context(), 10, time.Minute)
	if err != nil || len(msgs) == 0 {
		t.Errorf("Receive() = %d messages, error %v; want a message from a child", len(msgs), err)
	}
	for i, cmd := range children {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v\n%s", i, err, outputs[i].String())
		}
	}
}

const childEnv = "DECAP_SQLITE_CHILD_DB"

// TestHelperProcess is the child of TestChildProcesses: it acquires and
// releases locks with a cap of 2 on a shared database, failing if it ever
// sees more than 2 leases or loses a lease to another process, then
// publishes a message.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("only run as a child of TestChildProcesses")
	}
	db := openPath(t, path, sqlite.Options{})
	locks := sqlite.NewLocks(db)
	const limit = 2
	acquired := 0
	for i := range 150 {
		key := fmt.Sprintf("t/p/k%d", i%3)
		now := time.Now()
		l := build.Lease{Key: key, BuildID: build.NewID(now), Owner: os.Getenv("DECAP_SQLITE_CHILD_INDEX"), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
		err := locks.Acquire(t.Context(), l, limit)
		if errors.Is(err, build.ErrLocked) || errors.Is(err, build.ErrCapReached) {
			continue
		}
		if err != nil {
			t.Fatalf("Acquire() error = %v", err)
		}
		acquired++
		leases, err := locks.List(t.Context())
		if err != nil {
			t.Fatalf("List() error = %v", err)
		}
		if len(leases) > limit {
			t.Fatalf("List() shows %d leases, cap is %d", len(leases), limit)
		}
		// ErrConflict here would mean another process took the key while
		// this one held it.
		if _, err := locks.Release(t.Context(), key, l.BuildID); err != nil {
			t.Fatalf("Release() error = %v", err)
		}
	}
	if acquired == 0 {
		t.Fatalf("no Acquire succeeded")
	}
	publishOne(t, sqlite.NewQueue(db, sqlite.QueueOptions{}), "done-"+os.Getenv("DECAP_SQLITE_CHILD_INDEX"))
}

func publishOne(t *testing.T, q *sqlite.Queue, ref string) {
	t.Helper()
	now := time.Now()
	r := build.Request{
		V:           build.MessageVersion,
		BuildID:     build.NewID(now),
		Team:        "ae6rt",
		Project:     "p",
		Ref:         ref,
		RefType:     build.Branch,
		Trigger:     build.TriggerAPI,
		RequestedAt: now,
	}
	if err := q.Publish(t.Context(), r); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
}

func receiveOne(t *testing.T, q *sqlite.Queue) build.Message {
	t.Helper()
	msgs, err := q.Receive(t.Context(), 1, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Receive() = %d messages, error %v; want 1", len(msgs), err)
	}
	return msgs[0]
}

func TestConcurrentOpensOfANewFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			db, err := sqlite.Open(path, sqlite.Options{})
			if err == nil {
				_, err = sqlite.NewRecords(db).Projects(t.Context())
				err = errors.Join(err, db.Close())
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("Open() of a new file by several at once: %v", err)
		}
	}
}
