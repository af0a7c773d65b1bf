package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
)

// TestEventsCountsWhatTheForwarderDoes: a forwarder observed by
// metrics.Events counts each publish and each event forwarded, and sets
// the outbox lag from the oldest pending event.
func TestEventsCountsWhatTheForwarderDoes(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	m := metrics.NewEvents(reg)
	recs := buildtest.NewRecords()
	queued := time.Now().Add(-time.Minute)
	for _, id := range []build.ID{"b1", "b2"} {
		r := build.Record{BuildID: id, Team: "t", Project: "p", Ref: "main", RefType: build.Branch, Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: queued}
		if err := recs.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	stream := buildtest.NewStream()
	// The lag is measured from a clock a minute past the events.
	f, err := events.NewForwarder(recs.Outbox(), stream, events.ForwarderConfig{
		Topic: "build-events", Source: "http://decap.test", Observer: m,
		Now: func() time.Time { return time.Now().Add(time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.Forward(context.Background(), 0)
	if err != nil || n != 2 {
		t.Fatalf("Forward: %d, %v; want 2 events", n, err)
	}
	if got := metricstest.Value(t, reg, "decap_events_published_total", "result", "ok"); got != 2 {
		t.Errorf("decap_events_published_total{result=ok} = %v, want 2", got)
	}
	if got := metricstest.Value(t, reg, "decap_events_forwarded_total"); got != 2 {
		t.Errorf("decap_events_forwarded_total = %v, want 2", got)
	}
	if got := metricstest.Value(t, reg, "decap_events_outbox_lag_seconds"); got < 59 || got > 120 {
		t.Errorf("decap_events_outbox_lag_seconds = %v, want about 60", got)
	}
	if n, err := f.Forward(context.Background(), 0); err != nil || n != 0 {
		t.Fatalf("second Forward: %d, %v; want none", n, err)
	}
	if got := metricstest.Value(t, reg, "decap_events_outbox_lag_seconds"); got != 0 {
		t.Errorf("lag with an empty outbox = %v, want 0", got)
	}
}
