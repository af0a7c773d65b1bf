package sqlite_test

import (
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/sqlite"
)

func TestEventOutbox(t *testing.T) {
	t.Parallel()
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		s := sqlite.NewRecords(openDB(t, nil))
		return s, s.Outbox()
	})
}

// TestEventOutboxAcrossOpens writes through one open of a file and reads
// the outbox through another, as a process whose forwarder outlived the
// writer's does: the event shows when the reader's wait ends (no wake-up
// crosses processes), and is removed for both.
func TestEventOutboxAcrossOpens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	writer := sqlite.NewRecords(openPath(t, path, sqlite.Options{}))
	reader := sqlite.NewRecords(openPath(t, path, sqlite.Options{})).Outbox()
	r := build.Record{BuildID: build.NewID(time.Now()), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: time.Now()}
	done := make(chan []build.Event, 1)
	go func() {
		evs, err := reader.Pending(t.Context(), 10, 500*time.Millisecond)
		if err != nil {
			t.Errorf("Pending() error = %v", err)
		}
		done <- evs
	}()
	time.Sleep(100 * time.Millisecond)
	if err := writer.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	evs := <-done
	if got := eventIDs(evs); !slices.Equal(got, []string{build.EventID(r.BuildID, 1)}) {
		t.Fatalf("Pending() through another open = %v, want the write's event when the wait ended", got)
	}
	if err := reader.Forwarded(t.Context(), evs...); err != nil {
		t.Fatal(err)
	}
	if left, err := writer.Outbox().Pending(t.Context(), 10, 0); err != nil || len(left) > 0 {
		t.Errorf("the writer's outbox after the reader forwarded = %v, %v, want empty", eventIDs(left), err)
	}
}

// TestForwardedFindsEvents removes events from the outbox both ways
// Forwarded finds them (schemaV11 dropped the index by build and version):
// by the row Pending read in this open, and, for events another open read,
// by a scan. A row Pending read that another open removed meanwhile, its
// seq given to a newer event (the table emptied: SQLite numbers rows from
// the largest present), must not take the newer event with it.
func TestForwardedFindsEvents(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	a := sqlite.NewRecords(openPath(t, path, sqlite.Options{}))
	b := sqlite.NewRecords(openPath(t, path, sqlite.Options{}))
	now := time.Now()
	r := build.Record{BuildID: build.NewID(now), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: now}
	change := func() {
		t.Helper()
		if err := a.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	pending := func(o build.EventOutbox) []build.Event {
		t.Helper()
		evs, err := o.Pending(t.Context(), 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	change()
	if err := r.Defer(now, now.Add(time.Minute), "busy"); err != nil {
		t.Fatal(err)
	}
	change()
	read := pending(a.Outbox()) // versions 1 and 2, their rows remembered by a
	if got := eventIDs(read); len(got) != 2 {
		t.Fatalf("Pending() = %v, want versions 1 and 2", got)
	}
	// v1 by its row (a read it), v2 by a scan (b never read it).
	if err := a.Outbox().Forwarded(t.Context(), read[0]); err != nil {
		t.Fatal(err)
	}
	if err := b.Outbox().Forwarded(t.Context(), read[1]); err != nil {
		t.Fatal(err)
	}
	if left := pending(b.Outbox()); len(left) > 0 {
		t.Fatalf("outbox after forwarding both = %v, want empty", eventIDs(left))
	}

	// a reads version 3; b forwards it; version 4 is written into the
	// emptied table, at the row version 3 had.
	if err := r.Defer(now, now.Add(2*time.Minute), "still busy"); err != nil {
		t.Fatal(err)
	}
	change()
	v3 := pending(a.Outbox())
	if err := b.Outbox().Forwarded(t.Context(), v3...); err != nil {
		t.Fatal(err)
	}
	if err := r.Defer(now, now.Add(3*time.Minute), "busier"); err != nil {
		t.Fatal(err)
	}
	change()
	if err := a.Outbox().Forwarded(t.Context(), v3...); err != nil { // gone already: no error, nothing else removed
		t.Fatalf("Forwarded() of an event gone already error = %v", err)
	}
	want := []string{build.EventID(r.BuildID, 4)}
	if got := eventIDs(pending(b.Outbox())); !slices.Equal(got, want) {
		t.Errorf("outbox after a stale Forwarded = %v, want %v", got, want)
	}
}

// TestEventOutboxSurvivesKill runs a child process (this test binary, as
// TestOutboxKilledChild) that writes a build's changes and is killed (-9)
// before anything forwards them: a new open of the file has every event
// pending, in order, each build's record as its last change left it.
func TestEventOutboxSurvivesKill(t *testing.T) {
	if os.Getenv(outboxChildEnv) != "" {
		t.Skip("running as a child")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOutboxKilledChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), outboxChildEnv+"="+path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL after its writes:\n%s", err, out.String())
	}
	s := sqlite.NewRecords(openPath(t, path, sqlite.Options{}))
	stored, _, err := s.Waiting(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	running, err := s.Running(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	stored = append(stored, running...)
	if len(stored) != 2 {
		t.Fatalf("after the kill the store holds %d unfinished records, want the child's 2", len(stored))
	}
	evs, err := s.Outbox().Pending(t.Context(), 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stored {
		var got []int
		var last build.Event
		for _, e := range evs {
			if e.Subject == r.BuildID {
				got, last = append(got, e.Version), e
			}
		}
		if !slices.Equal(got, []int{1, 2, 3}) {
			t.Errorf("build %s has events %v pending after the kill, want versions [1 2 3]", r.BuildID, got)
		}
		if !build.SameRecord(r, last.Record) {
			t.Errorf("the last event of build %s has record\n%+v\nwant the stored\n%+v", r.BuildID, last.Record, r)
		}
	}
}

const outboxChildEnv = "DECAP_SQLITE_OUTBOX_CHILD_DB"

// TestOutboxKilledChild is the child of TestEventOutboxSurvivesKill: it
// saves two builds' first three changes each and kills itself.
func TestOutboxKilledChild(t *testing.T) {
	path := os.Getenv(outboxChildEnv)
	if path == "" {
		t.Skip("only run as a child of TestEventOutboxSurvivesKill")
	}
	db, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := sqlite.NewRecords(db)
	now := time.Now()
	for i := range 2 {
		r := build.Record{BuildID: build.NewID(now), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: now}
		life := []func() error{
			func() error { return nil },
			func() error { return r.Defer(now, now.Add(time.Minute), "busy") },
			func() error {
				if i == 0 {
					return r.Start(now, "pod", "c0ffee")
				}
				return r.Defer(now, now.Add(2*time.Minute), "still busy")
			},
		}
		for _, change := range life {
			if err := change(); err != nil {
				t.Fatal(err)
			}
			if err := s.Save(t.Context(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Saves returned: committed. Die with no Close, no forward.
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

// TestMigrateToOutbox opens a database of schema version 7 holding a
// record: the record counts as version 1, so its next change is event 2.
func TestMigrateToOutbox(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	db := openPath(t, path, sqlite.Options{})
	s := sqlite.NewRecords(db)
	now := time.Now()
	r := build.Record{BuildID: build.NewID(now), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: now}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Back to version 7: no version column, no outbox, no stream.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TABLE record_events`, `ALTER TABLE records DROP COLUMN version`,
		`DROP TABLE stream_events`, `DROP TABLE stream_groups`,
		`DROP TABLE webhook_deliveries`, `DROP TABLE webhook_subscriptions`, `PRAGMA user_version = 7`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	s = sqlite.NewRecords(openPath(t, path, sqlite.Options{}))
	if evs, err := s.Outbox().Pending(t.Context(), 10, 0); err != nil || len(evs) > 0 {
		t.Fatalf("outbox after the migration = %v, %v; want empty", eventIDs(evs), err)
	}
	if err := r.Defer(now, now.Add(time.Minute), "busy"); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Outbox().Pending(t.Context(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(evs); !slices.Equal(got, []string{build.EventID(r.BuildID, 2)}) {
		t.Errorf("the first change after the migration gave events %v, want [%s]", got, build.EventID(r.BuildID, 2))
	}
}

func eventIDs(evs []build.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
