// Package metricstest reads metrics out of a Prometheus registry in tests.
package metricstest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value returns the value of the counter or gauge name with exactly the
// labels given as name/value pairs, or, for a histogram, its sample count;
// 0 when there is no such series.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m := find(t, g, name, labels)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("metric %s is neither a counter, a gauge nor a histogram", name)
	return 0
}

// Sum returns the sum of the histogram name with exactly the labels given,
// or 0 when there is no such series.
func Sum(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	if m := find(t, g, name, labels); m != nil && m.Histogram != nil {
		return m.Histogram.GetSampleSum()
	}
	return 0
}

func find(t testing.TB, g prometheus.Gatherer, name string, labels []string) *dto.Metric {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("labels of %s must be name/value pairs, got %q", name, labels)
	}
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels)/2 {
				continue
			}
			for _, l := range m.GetLabel() {
				found := false
				for i := 0; i < len(labels); i += 2 {
					if labels[i] == l.GetName() && labels[i+1] == l.GetValue() {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			return m
		}
	}
	return nil
}
