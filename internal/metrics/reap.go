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
	retries  *prometheus.CounterVec
}

// NewReap registers the reaper's metrics on reg.
func NewReap(reg prometheus.Registerer) *Reap {
	f := promauto.With(reg)
	m := &Reap{
		finished: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_builds_finished_total",
			Help: "Builds whose final record this reaper wrote, by status (succeeded, failed, timed_out, cancelled, errored, superseded).",
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
			Help: "Failed reaper steps, each retried later, by step (record, release, retry, remove, reconcile, cancel).",
		}, []string{"step"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_build_retries_total",
			Help: "Retries the reaper started (each a new build, a new attempt), by the infrastructure failure that ended the attempt before (deleted, evicted, node_lost, image_pull, launch_interrupted, upload_failed, killed).",
		}, []string{"cause"}),
	}
	for _, s := range []build.Status{build.StatusSucceeded, build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored, build.StatusSuperseded} {
		m.finished.WithLabelValues(string(s))
		m.duration.WithLabelValues(string(s))
	}
	for _, s := range []reap.Step{reap.StepRecord, reap.StepRelease, reap.StepRetry, reap.StepRemove, reap.StepReconcile, reap.StepCancel} {
		m.errors.WithLabelValues(string(s))
	}
	for _, c := range []build.InfraCause{build.InfraDeleted, build.InfraEvicted, build.InfraNodeLost, build.InfraImagePull,
		build.InfraLaunchInterrupted, build.InfraUpload, build.InfraKilled} {
		m.retries.WithLabelValues(string(c))
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

// Retried counts a retry by the cause of the failure before it.
func (m *Reap) Retried(cause build.InfraCause) { m.retries.WithLabelValues(string(cause)).Inc() }

// Failed counts a failed step.
func (m *Reap) Failed(step reap.Step) { m.errors.WithLabelValues(string(step)).Inc() }
