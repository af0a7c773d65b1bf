// Package metrics defines Decap's Prometheus metrics. Each service creates
// its own registry with NewRegistry in main and passes it to the
// constructors here; nothing is registered globally. The logic packages
// (ingest, dispatch, reap) do not import Prometheus: they report to small
// Observer interfaces, which Ingest, Dispatch and Reap implement, and the
// backend ports are counted by the decorators of Backend.
//
// Every name starts with decap_; labels take values from small fixed sets
// (never build IDs, refs or project keys), so that the number of series
// stays bounded whatever the traffic.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/decap-ci/decap/internal/sqlite"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors; a service registers its own metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg in the Prometheus exposition formats, for GET /metrics.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Histogram buckets, in seconds.
var (
	// fastBuckets: a call to the queue, 1 ms to 10 s.
	fastBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// waitBuckets: from a request to its launch, 10 ms to a day (the
	// default DECAP_MAX_DEFER_AGE).
	waitBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400}
	// lagBuckets: from a build's end to its record, 10 ms to 10 minutes.
	lagBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// durationBuckets: a build's run, 1 s to 6 hours.
	durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600}
)

// newSupersedes registers decap_supersedes_total, which ingest and the
// dispatcher count in, each where it accepts requests.
func newSupersedes(f promauto.Factory) *prometheus.CounterVec {
	c := f.NewCounterVec(prometheus.CounterOpts{
		Name: "decap_supersedes_total",
		Help: "Requests a newer request of their lock key made unnecessary, counted where the newer one was accepted, by what: waiting (a queued or deferred request ended superseded) or running (a running build asked to stop; it ends superseded; project.json supersede.running).",
	}, []string{"what"})
	c.WithLabelValues("waiting")
	c.WithLabelValues("running")
	return c
}

// countSupersedes adds waiting and running to c.
func countSupersedes(c *prometheus.CounterVec, waiting, running int) {
	c.WithLabelValues("waiting").Add(float64(waiting))
	c.WithLabelValues("running").Add(float64(running))
}

// NewStoreWrites registers the embedded store's write metrics on reg
// (sqlite.DB.WriteStats), read from stats at each scrape.
func NewStoreWrites(reg prometheus.Registerer, stats func() sqlite.WriteStats) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "decap_sqlite_write_transactions_total",
			Help: "Write transactions this process began on the embedded store (group commit runs several writes in one).",
		}, func() float64 { return float64(stats().Transactions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "decap_sqlite_writes_total",
			Help: "Writes this process made on the embedded store.",
		}, func() float64 { return float64(stats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "decap_sqlite_write_lock_held_seconds_total",
			Help: "Time this process held the embedded store's write lock, commits and their fsyncs included.",
		}, func() float64 { return stats().LockHeld.Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "decap_sqlite_write_lock_wait_seconds_total",
			Help: "Time this process's writes waited for another process's write lock on the embedded store.",
		}, func() float64 { return stats().LockWait.Seconds() }),
	)
}
