package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ingest"
)

// Ingest holds ingest's metrics; it is an ingest.Observer.
type Ingest struct {
	webhooks *prometheus.CounterVec
	publish  prometheus.Histogram
	queued   *prometheus.CounterVec
	requests *prometheus.CounterVec

	rejected  *prometheus.CounterVec
	followers prometheus.Gauge
	polls     prometheus.Counter
	events    prometheus.Gauge

	supersedes *prometheus.CounterVec
}

// NewIngest registers ingest's metrics on reg.
func NewIngest(reg prometheus.Registerer) *Ingest {
	f := promauto.With(reg)
	m := &Ingest{
		webhooks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_webhooks_total",
			Help: "GitHub webhooks received at POST /hooks/github, by event (push, pull_request, issue_comment, ping, other, none) and outcome (queued, ignored, duplicate, waiting, closed, unauthorized, invalid, error).",
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
	m.rejected = f.NewCounterVec(prometheus.CounterOpts{
		Name: "decap_ingest_rejected_total",
		Help: "Requests ingest refused or cut off to protect itself, by reason: body_too_large (413), body_timeout (408, the body did not arrive within DECAP_HTTP_READ_TIMEOUT), body_client and body_server (429, the client's or the whole body budget taken), followers_client and followers_server (429, the client's or every log follow taken), events_client and events_server (429, the client's or every event stream taken), unsigned (401 for a webhook without X-Hub-Signature-256, before its body is read).",
	}, []string{"reason"})
	m.followers = f.NewGauge(prometheus.GaugeOpts{
		Name: "decap_log_followers",
		Help: "Log streams (GET /api/v1/builds/:id/log?follow=1) open now.",
	})
	m.polls = f.NewCounter(prometheus.CounterOpts{
		Name: "decap_log_follow_polls_total",
		Help: "Reads of followed builds' records: one per poll interval per followed build, however many follow it.",
	})
	m.events = f.NewGauge(prometheus.GaugeOpts{
		Name: "decap_event_stream_clients",
		Help: "Server-sent event streams (GET /api/v1/events) open now.",
	})
	m.supersedes = newSupersedes(f)
	for _, r := range ingest.RejectReasons() {
		m.rejected.WithLabelValues(r)
	}
	// Known series start at zero rather than appearing on first use.
	for _, event := range []string{"push", "pull_request", "issue_comment", "ping", "other"} {
		for _, outcome := range []string{"queued", "ignored", "duplicate", "waiting", "closed", "unauthorized", "invalid", "error"} {
			m.webhooks.WithLabelValues(event, outcome)
		}
	}
	for _, t := range []build.Trigger{build.TriggerPush, build.TriggerManual, build.TriggerAPI, build.TriggerPullRequest} {
		m.queued.WithLabelValues(string(t))
	}
	return m
}

// Superseded counts the waiting requests an accepted request ended and
// the running builds it asked to stop.
func (m *Ingest) Superseded(waiting, running int) { countSupersedes(m.supersedes, waiting, running) }

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

// Rejected counts a refused request.
func (m *Ingest) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// Followers moves the gauge of open log follows.
func (m *Ingest) Followers(delta int) { m.followers.Add(float64(delta)) }

// FollowPolled counts a read of a followed build's record.
func (m *Ingest) FollowPolled() { m.polls.Inc() }

// EventClients moves the gauge of open event streams.
func (m *Ingest) EventClients(delta int) { m.events.Add(float64(delta)) }

// RequestServed counts an HTTP request.
func (m *Ingest) RequestServed(method, route string, code int) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
}
