package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/dispatch"
)

// SampleEvery is how often Dispatch.Sample reads the queue's counts and the
// held leases: often enough for a dashboard, and rare enough that an idle
// dispatcher stays at a few queue calls a minute (three long polls and one
// sample), as DESIGN.md's idle target asks.
const SampleEvery = time.Minute

// Dispatch holds the dispatcher's metrics; it is a dispatch.Observer.
type Dispatch struct {
	decisions *prometheus.CounterVec
	lockWait  prometheus.Histogram
	unlocked  prometheus.Counter
	paused    prometheus.Gauge

	supersedes *prometheus.CounterVec

	running, capacity                  prometheus.Gauge
	visible, inFlight, dead, oldestAge prometheus.Gauge
}

// NewDispatch registers the dispatcher's metrics on reg; cap is the
// concurrency cap (<= 0: none).
func NewDispatch(reg prometheus.Registerer, cap int) *Dispatch {
	f := promauto.With(reg)
	gauge := func(name, help string) prometheus.Gauge {
		return f.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &Dispatch{
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_dispatch_decisions_total",
			Help: "Build requests decided by this dispatcher, by outcome (launched, deferred, dropped) and reason (started, already_running, locked, cap, backend_error, launch_failed, unmanaged, unknown_project, invalid_project, duplicate, expired, already_ended, superseded, malformed).",
		}, []string{"outcome", "reason"}),
		unlocked: f.NewCounter(prometheus.CounterOpts{
			Name: "decap_builds_unlocked_total",
			Help: "Builds launched that could not keep their branch lock and slot (another build took them while the launch was slow): invariant 3 is at risk; alert on any increase.",
		}),
		lockWait: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "decap_lock_wait_seconds",
			Help:    "Time from a build's request to its launch, in seconds: queueing, deferrals behind the branch lock or the cap, and the decision.",
			Buckets: waitBuckets,
		}),
		paused:    gauge("decap_dispatch_paused", "1 while the dispatch gate is paused (nothing is taken off the queue), 0 while it is open, as this dispatcher last read it."),
		running:   gauge("decap_running_builds", "Running builds across the cluster: held branch-lock leases, each one slot of the cap. Sampled every minute."),
		capacity:  gauge("decap_running_builds_cap", "The concurrency cap on running builds across the cluster (DECAP_MAX_RUNNING_BUILDS); 0 means no cap."),
		visible:   gauge("decap_queue_visible_messages", "Build requests waiting on the queue to be received. Sampled every minute."),
		inFlight:  gauge("decap_queue_inflight_messages", "Build requests received and not yet deleted: being decided, or deferred. Sampled every minute."),
		dead:      gauge("decap_queue_dead_letter_messages", "Messages in the dead-letter queue. Sampled every minute (every 5 minutes on SQS)."),
		oldestAge: gauge("decap_queue_oldest_age_seconds", "Age of the oldest message on the queue, in seconds (0 when it is empty). Sampled every minute."),
	}
	m.supersedes = newSupersedes(f)
	m.capacity.Set(float64(max(cap, 0)))
	for _, d := range []struct {
		a dispatch.Action
		c []dispatch.Cause
	}{
		{dispatch.Launched, []dispatch.Cause{dispatch.CauseStarted, dispatch.CauseAlreadyRunning}},
		{dispatch.Deferred, []dispatch.Cause{dispatch.CauseLocked, dispatch.CauseCap, dispatch.CauseBackendError, dispatch.CauseLaunchFailed}},
		{dispatch.Dropped, []dispatch.Cause{dispatch.CauseUnmanaged, dispatch.CauseUnknownProject, dispatch.CauseInvalidProject,
			dispatch.CauseDuplicate, dispatch.CauseExpired, dispatch.CauseAlreadyEnded, dispatch.CauseSuperseded, dispatch.CauseMalformed, dispatch.CauseLaunchFailed}},
	} {
		for _, c := range d.c {
			m.decisions.WithLabelValues(d.a.String(), string(c))
		}
	}
	return m
}

// Decided counts a decision and, for a build started now, observes how
// long it waited.
func (m *Dispatch) Decided(d dispatch.Decision) {
	reason := string(d.Cause)
	if reason == "" {
		reason = "other"
	}
	m.decisions.WithLabelValues(d.Action.String(), reason).Inc()
	if d.Action == dispatch.Launched && d.Cause == dispatch.CauseStarted {
		m.lockWait.Observe(d.Waited.Seconds())
	}
	if d.Unlocked {
		m.unlocked.Inc()
	}
	countSupersedes(m.supersedes, d.SupersededWaiting, d.SupersededRunning)
}

// Paused sets the gate gauge.
func (m *Dispatch) Paused(paused bool) {
	v := 0.0
	if paused {
		v = 1
	}
	m.paused.Set(v)
}

// QueueStats counts the queue's messages (build.Queue.Stats).
type QueueStats interface {
	Stats(ctx context.Context) (build.QueueStats, error)
}

// LeaseLister lists the held leases (build.Locks.List).
type LeaseLister interface {
	List(ctx context.Context) ([]build.Lease, error)
}

// DeadLetterEvery is how many samples Sample takes per read of the
// dead-letter queue, where the queue can leave it out (build.Depther): on
// SQS that is a GetQueueAttributes call, so an idle dispatcher makes 1.2
// such calls a minute instead of 2.
const DeadLetterEvery = 5

// Sample sets the queue and running-build gauges from q and locks now and
// then every interval, until ctx ends; the dead-letter count every
// DeadLetterEvery intervals where q can leave it out. It runs beside the
// dispatcher, never on its decision path. A failed read leaves its gauges
// as they were; the first failure of a run of them is logged, and so is
// the recovery.
func (m *Dispatch) Sample(ctx context.Context, q QueueStats, locks LeaseLister, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for n := 0; ; n++ {
		err := m.sample(ctx, q, locks, n%DeadLetterEvery == 0)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			log.Warn("sample the queue and running builds for metrics; keeping the last values", "err", err)
		case err == nil && failing:
			log.Info("sampling the queue and running builds for metrics works again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Dispatch) sample(ctx context.Context, q QueueStats, locks LeaseLister, dead bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var st build.QueueStats
	var qerr error
	if dead {
		st, qerr = q.Stats(ctx)
	} else {
		st, qerr = build.DepthOf(ctx, q)
	}
	if qerr == nil {
		m.visible.Set(float64(st.Visible))
		m.inFlight.Set(float64(st.InFlight))
		if st.DeadLettered != build.NotCounted {
			m.dead.Set(float64(st.DeadLettered))
		}
		m.oldestAge.Set(st.OldestAge.Seconds())
	}
	leases, lerr := locks.List(ctx)
	if lerr == nil {
		m.running.Set(float64(len(leases)))
	}
	if qerr != nil {
		return qerr
	}
	return lerr
}
