package awsdynamo_test

import (
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
)

// BenchmarkRecordLife saves one build's life, as the services do: queued
// (a create), deferred, running, succeeded (three replaces), against the
// DynamoDB at AWS_ENDPOINT_URL, without events and with them (each change
// then a consistent read and a put carrying the change's event; the
// events left pending, as while no forwarder runs).
func BenchmarkRecordLife(b *testing.B) {
	for _, bc := range []struct {
		name   string
		events bool
	}{{"plain", false}, {"events", true}} {
		b.Run(bc.name, func(b *testing.B) {
			client := newClient(b)
			s := awsdynamo.NewRecords(client, newTables(b, client, buildsOnly).Builds)
			if bc.events {
				s.WithEvents()
			}
			base := time.Now()
			ctx := b.Context()
			b.ResetTimer()
			for i := range b.N {
				r := build.Record{BuildID: build.NewID(base.Add(time.Duration(i) * time.Millisecond)), Team: "t", Project: "p", Ref: "main",
					Status: build.StatusQueued, QueuedAt: base}
				if err := s.Save(ctx, r); err != nil {
					b.Fatal(err)
				}
				for _, change := range []func() error{
					func() error { return r.Defer(base, base.Add(time.Minute), "busy") },
					func() error { return r.Start(base, "pod", "c0ffee") },
					func() error {
						return r.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(time.Minute))
					},
				} {
					if err := change(); err != nil {
						b.Fatal(err)
					}
					if err := s.Save(ctx, r); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(4*b.N), "µs/change")
		})
	}
}
