package awsdynamo_test

import (
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
)

// BenchmarkRecordLife saves one build's life, as the services do: queued
// (a create), deferred, running, succeeded (three replaces), against the
// DynamoDB at AWS_ENDPOINT_URL. Each change is one record write.
func BenchmarkRecordLife(b *testing.B) {
	client := newClient(b)
	tables := newTables(b, client, buildsAndOutbox)
	s := awsdynamo.NewRecords(client, tables.Builds).WithOutbox(tables.EventsOutbox)
	base := time.Now()
	ctx := b.Context()
	b.ResetTimer()
	for i := range b.N {
		r := build.Record{BuildID: build.NewID(base.Add(time.Duration(i) * time.Millisecond)), Team: "t", Project: "p", Ref: "main",
			Status: build.StatusQueued, QueuedAt: base}
		if err := s.Save(ctx, r); err != nil {
			b.Fatal(err)
		}
		if err := r.Defer(base, base.Add(time.Minute), "busy"); err != nil {
			b.Fatal(err)
		}
		if err := s.Save(ctx, r); err != nil {
			b.Fatal(err)
		}
		if err := r.Start(base, "pod", "c0ffee"); err != nil {
			b.Fatal(err)
		}
		if err := s.Save(ctx, r); err != nil {
			b.Fatal(err)
		}
		if err := r.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
		if err := s.Save(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(4*b.N), "µs/change")
}
