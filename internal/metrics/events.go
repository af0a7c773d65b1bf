package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Events is the build-event forwarder's metrics (events.Observer): the
// events published to the stream (and the publishes that failed), the
// events forwarded (published and removed from the outbox), and the
// outbox lag, the age of the oldest event a round found pending.
type Events struct {
	published *prometheus.CounterVec
	forwarded prometheus.Counter
	lag       prometheus.Gauge
}

// NewEvents registers decap_events_published_total,
// decap_events_forwarded_total and decap_events_outbox_lag_seconds on reg.
func NewEvents(reg prometheus.Registerer) *Events {
	f := promauto.With(reg)
	m := &Events{
		published: f.NewCounterVec(prometheus.CounterOpts{
			Name: "decap_events_published_total",
			Help: "Publishes of a build event to the event stream, by result (ok, error).",
		}, []string{"result"}),
		forwarded: f.NewCounter(prometheus.CounterOpts{
			Name: "decap_events_forwarded_total",
			Help: "Build events published to the stream and removed from the outbox.",
		}),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "decap_events_outbox_lag_seconds",
			Help: "Age of the oldest build event the forwarder's last round found in the outbox (0: none).",
		}),
	}
	m.published.WithLabelValues("ok")
	m.published.WithLabelValues("error")
	return m
}

// EventPublished counts one publish.
func (m *Events) EventPublished(err error) {
	if err != nil {
		m.published.WithLabelValues("error").Inc()
		return
	}
	m.published.WithLabelValues("ok").Inc()
}

// EventsForwarded counts n events forwarded.
func (m *Events) EventsForwarded(n int) { m.forwarded.Add(float64(n)) }

// OutboxLag sets the outbox lag.
func (m *Events) OutboxLag(d time.Duration) { m.lag.Set(d.Seconds()) }
