package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/decap-ci/decap/internal/build"
)

// Ingest holds ingest's metrics; it is an ingest.Observer.
type Ingest struct {
	webhooks *prometheus.CounterVec
	publish  prometheus.Histogram
	queued   *prometheus.CounterVec
	requests *prometheus.CounterVec
}

// NewIngest registers ingest's metrics on reg.
func NewIngest(reg prometheus.Registerer) *Ingest {
	f := promauto.With(reg)
	m := &Ingest{
		webhooks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_webhooks_total",
			Help: "GitHub webhooks received at POST /hooks/github, by event (push, ping, other, none) and outcome (queued, ignored, duplicate, unauthorized, invalid, error).",
		}, []string{"event", "outcome"}),
		publish: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "decap_publish_seconds",
			Help:    "Time to publish one build request to the queue, in seconds, failed publishes included (their errors count in decap_backend_errors_total{backend=\"queue\",op=\"publish\"}).",
			Buckets: fastBuckets,
		}),
		queued: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_build_requests_queued_total",
			Help: "New build requests put on the queue, by trigger (push, manual, api); redeliveries answered with an earlier build are not counted.",
		}, []string{"trigger"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_api_requests_total",
			Help: "HTTP requests answered by ingest, by method, route pattern (e.g. /api/v1/builds/:id; unmatched when no route matched) and status code.",
		}, []string{"method", "route", "code"}),
	}
	// Known series start at zero rather than appearing on first use.
	for _, event := range []string{"push", "ping", "other"} {
		for _, outcome := range []string{"queued", "ignored", "duplicate", "unauthorized", "invalid", "error"} {
			m.webhooks.WithLabelValues(event, outcome)
		}
	}
	for _, t := range []build.Trigger{build.TriggerPush, build.TriggerManual, build.TriggerAPI} {
		m.queued.WithLabelValues(string(t))
	}
	return m
}

// WebhookHandled counts a webhook.
func (m *Ingest) WebhookHandled(event, outcome string) {
	m.webhooks.WithLabelValues(event, outcome).Inc()
}

// Published observes the latency of one publish.
func (m *Ingest) Published(took time.Duration) { m.publish.Observe(took.Seconds()) }

// BuildQueued counts a new build request.
func (m *Ingest) BuildQueued(trigger build.Trigger) {
	m.queued.WithLabelValues(string(trigger)).Inc()
}

// RequestServed counts an HTTP request.
func (m *Ingest) RequestServed(method, route string, code int) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
}
