package webhook

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's series. No label names a URL, a key or an
// event.
type metrics struct {
	deliveries *prometheus.CounterVec // result: delivered, failed (an attempt, retried), expired (given up)
	oldest     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keygate",
			Name:      "webhook_deliveries_total",
			Help:      "Webhook delivery attempts by result: delivered, failed (retried later), expired (given up after 24h).",
		}, []string{"result"}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "keygate",
			Name:      "webhook_oldest_pending_seconds",
			Help:      "Age of the oldest webhook message not yet delivered to every URL; 0 when none is pending.",
		}),
	}
	for _, r := range []string{"delivered", "failed", "expired"} {
		m.deliveries.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.oldest} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// observeOldest sets the gauge from the oldest pending message's queueing
// time in Unix ms ("" when none).
func (m *metrics) observeOldest(bornMs string, now time.Time) {
	born, err := strconv.ParseFloat(bornMs, 64)
	if err != nil {
		m.oldest.Set(0)
		return
	}
	m.oldest.Set(max(0, now.Sub(time.UnixMilli(int64(born))).Seconds()))
}
