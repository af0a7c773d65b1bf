package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/reap"
)

// Reap holds the reaper's metrics; it is a reap.Observer.
type Reap struct {
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lag      prometheus.Histogram
	errors   *prometheus.CounterVec
}

// NewReap registers the reaper's metrics on reg.
func NewReap(reg prometheus.Registerer) *Reap {
	f := promauto.With(reg)
	m := &Reap{
		finished: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_builds_finished_total",
			Help: "Builds whose final record this reaper wrote, by status (succeeded, failed, timed_out, cancelled, errored).",
		}, []string{"status"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "decap_build_duration_seconds",
			Help:    "How long finished builds ran, from start to end, in seconds, by final status.",
			Buckets: durationBuckets,
		}, []string{"status"}),
		lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "decap_reaper_lag_seconds",
			Help:    "Time from a build's end, as its executor saw it, to its final record being written, in seconds.",
			Buckets: lagBuckets,
		}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_reaper_errors_total",
			Help: "Failed reaper steps, each retried later, by step (record, release, remove, reconcile, cancel).",
		}, []string{"step"}),
	}
	for _, s := range []build.Status{build.StatusSucceeded, build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored} {
		m.finished.WithLabelValues(string(s))
		m.duration.WithLabelValues(string(s))
	}
	for _, s := range []reap.Step{reap.StepRecord, reap.StepRelease, reap.StepRemove, reap.StepReconcile, reap.StepCancel} {
		m.errors.WithLabelValues(string(s))
	}
	return m
}

// Ended counts a finished build and observes its duration and, when known
// (lag >= 0), the lag.
func (m *Reap) Ended(status build.Status, ran, lag time.Duration) {
	m.finished.WithLabelValues(string(status)).Inc()
	m.duration.WithLabelValues(string(status)).Observe(ran.Seconds())
	if lag >= 0 {
		m.lag.Observe(lag.Seconds())
	}
}

// Failed counts a failed step.
func (m *Reap) Failed(step reap.Step) { m.errors.WithLabelValues(string(step)).Inc() }
