package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Webhooks is the outgoing webhooks' metrics (webhooks.Observer): each
// attempt's outcome.
type Webhooks struct {
	deliveries *prometheus.CounterVec
}

// NewWebhooks registers decap_webhook_deliveries_total on reg.
func NewWebhooks(reg prometheus.Registerer) *Webhooks {
	m := &Webhooks{deliveries: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "decap_webhook_deliveries_total",
		Help: "Attempts to deliver a build event to an outgoing webhook, by result (delivered; retried: failed, to be tried again; dead_lettered: failed for the last time, or refused).",
	}, []string{"result"})}
	for _, r := range []string{"delivered", "retried", "dead_lettered"} {
		m.deliveries.WithLabelValues(r)
	}
	return m
}

// WebhookDelivery counts one attempt's outcome.
func (m *Webhooks) WebhookDelivery(result string) { m.deliveries.WithLabelValues(result).Inc() }
