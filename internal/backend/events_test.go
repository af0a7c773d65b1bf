package backend_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/config"
)

// TestEmbeddedRecordChangesReachTheStream: on the embedded backend a
// record change written through Set.Records (instrumented, as the services
// use it) is forwarded by StartEvents to Set.Events, in order per build,
// with the public URL as its source; and stop returns.
func TestEmbeddedRecordChangesReachTheStream(t *testing.T) {
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"DECAP_DATA_DIR": t.TempDir(), "DECAP_PUBLIC_URL": "https://decap.example",
			"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts")}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.Open(t.Context(), cfg, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Outbox == nil || b.Events == nil {
		t.Fatal("the embedded backend has no outbox or event stream")
	}
	stop := b.StartEvents(t.Context(), nil)
	defer stop()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got := make(chan build.Event, 16)
	go b.Events.Consume(ctx, "backend-test", func(ctx context.Context, e build.Event) error {
		got <- e
		return nil
	})
	// Consume starts a new group at the end of the stream, once it runs:
	// change a probe build until its events come through.
	probe := build.Record{BuildID: "01a2f000-0000-7000-8000-0000000000ff", Team: "decap-ci", Project: "hello",
		Ref: "probe", RefType: build.Branch, Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: time.Now()}
	for through := false; !through; {
		probe.Reason = time.Now().String()
		if err := b.Records.Save(ctx, probe); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			through = true
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no event of the probe build reached the stream")
		}
	}
	r := build.Record{BuildID: "01a2f000-0000-7000-8000-000000000001", Team: "decap-ci", Project: "hello",
		Ref: "main", RefType: build.Branch, Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: time.Now()}
	if err := b.Records.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	started := r
	started.Status, started.StartedAt = build.StatusRunning, time.Now()
	if err := b.Records.Save(ctx, started); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{string(r.BuildID) + ":1", string(r.BuildID) + ":2"} {
		var e build.Event
		for e.Subject != r.BuildID { // skipping late events of the probe
			select {
			case e = <-got:
			case <-ctx.Done():
				t.Fatalf("event %d (%s) never reached the stream", i, want)
			}
		}
		if e.ID != want || e.Source != "https://decap.example" {
			t.Fatalf("event %d: id %q source %q; want id %q from https://decap.example", i, e.ID, e.Source, want)
		}
	}
}
