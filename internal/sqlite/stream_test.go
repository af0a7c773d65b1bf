package sqlite_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/sqlite"
)

func TestEventStream(t *testing.T) {
	t.Parallel()
	buildtest.TestEventStream(t, func(t *testing.T) (message.Publisher, build.EventStream) {
		s := sqlite.NewStream(openDB(t, nil), sqlite.StreamOptions{})
		return s, s
	})
}

// TestEventStreamWokenAcrossOpens publishes through one open of a file and
// consumes through another whose consumer rechecks only every minute: the
// publish wakes it (a datagram), as a forwarder in ingest wakes the
// webhooks' consumer in another service.
func TestEventStreamWokenAcrossOpens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	pub := sqlite.NewStream(openPath(t, path, sqlite.Options{}), sqlite.StreamOptions{})
	sub := sqlite.NewStream(openPath(t, path, sqlite.Options{}), sqlite.StreamOptions{Recheck: time.Minute})
	got := make(chan build.Event, 10)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go sub.Consume(ctx, "across", func(_ context.Context, e build.Event) error { got <- e; return nil })
	// The consumer made its group at the end of the stream once its first
	// Consume write is done; publish until it hears.
	r := build.Record{BuildID: build.NewID(time.Now()), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: time.Now()}
	deadline := time.After(wokenWithin)
	for v := 1; ; v++ {
		publishEvent(t, pub, r, v)
		select {
		case e := <-got:
			if e.Subject != r.BuildID {
				t.Fatalf("consumer got %s", e.ID)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("a consumer of another open was not woken within %v", wokenWithin)
		}
	}
}

// TestEventStreamLeaseLapses: a consumer whose process is killed (-9)
// while it handles an event holds its group until its lease lapses; then
// a consumer of another process takes the group over and gets that event
// again (at least once).
func TestEventStreamLeaseLapses(t *testing.T) {
	if os.Getenv(streamChildEnv) != "" {
		t.Skip("running as a child")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decap.db")
	s := sqlite.NewStream(openPath(t, path, sqlite.Options{}), sqlite.StreamOptions{Lease: time.Second, Recheck: 100 * time.Millisecond})
	// Make the group at the end of the stream, and let it go.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_ = s.Consume(ctx, "lapse", func(context.Context, build.Event) error { return nil })
	cancel()
	r := build.Record{BuildID: build.NewID(time.Now()), Team: "ae6rt", Project: "p", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: time.Now()}
	publishEvent(t, s, r, 1)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestStreamKilledChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), streamChildEnv+"="+path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL while handling:\n%s", err, out.String())
	}
	got := make(chan build.Event, 1)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go s.Consume(ctx, "lapse", func(_ context.Context, e build.Event) error {
		select {
		case got <- e:
		default:
		}
		return nil
	})
	select {
	case e := <-got:
		if e.ID != build.EventID(r.BuildID, 1) {
			t.Errorf("the group's next consumer got %s, want %s again", e.ID, build.EventID(r.BuildID, 1))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the group's next consumer got nothing: the dead consumer's lease did not lapse")
	}
}

const streamChildEnv = "DECAP_SQLITE_STREAM_CHILD_DB"

// TestStreamKilledChild is the child of TestEventStreamLeaseLapses: it
// consumes the group and kills itself while it handles the first event.
func TestStreamKilledChild(t *testing.T) {
	path := os.Getenv(streamChildEnv)
	if path == "" {
		t.Skip("only run as a child of TestEventStreamLeaseLapses")
	}
	db, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := sqlite.NewStream(db, sqlite.StreamOptions{Lease: time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_ = s.Consume(ctx, "lapse", func(context.Context, build.Event) error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
		return nil
	})
	t.Fatal("the child got no event to handle")
}

func publishEvent(t *testing.T, s *sqlite.Stream, r build.Record, version int) {
	t.Helper()
	e := build.NewEvent(r, version, time.Now())
	e.Source = "https://decap.test"
	m, err := events.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("build-events", m); err != nil {
		t.Fatal(err)
	}
}
