package webhook

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the delivery side's Prometheus metrics (docs/OPERATIONS.md).
type Metrics struct {
	// Deliveries counts attempts by outcome: delivered, retry, gave_up,
	// gone (410, endpoint turned off), skipped (a stale or duplicate task).
	Deliveries *prometheus.CounterVec
	// AttemptDuration is the time of one HTTP attempt.
	AttemptDuration prometheus.Histogram
	// Latency is from the change (the event's commit) to the receiver's
	// 2xx, for first-time deliveries.
	Latency prometheus.Histogram
	// OldestPending is the age of the oldest undelivered event per
	// endpoint; Pending the number of them.
	OldestPending *prometheus.GaugeVec
	Pending       *prometheus.GaugeVec
}

// NewMetrics registers the metrics on reg (nil: not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome (delivered, retry, gave_up, gone, skipped).",
		}, []string{"outcome"}),
		AttemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasessions_webhook_attempt_duration_seconds",
			Help:    "Duration of one webhook HTTP attempt.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasessions_webhook_delivery_latency_seconds",
			Help:    "Time from an event's change to the receiver's 2xx.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
		OldestPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasessions_webhook_oldest_pending_seconds",
			Help: "Age of the oldest undelivered webhook event, per endpoint.",
		}, []string{"endpoint_id"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasessions_webhook_pending",
			Help: "Undelivered webhook events, per endpoint.",
		}, []string{"endpoint_id"}),
	}
	if reg != nil {
		reg.MustRegister(m.Deliveries, m.AttemptDuration, m.Latency, m.OldestPending, m.Pending)
	}
	return m
}
