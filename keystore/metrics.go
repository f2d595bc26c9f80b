package keystore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// verifierMetrics are the verifier's series of CONTRACT.md §7. No label
// ever carries a key ID, subject or secret.
type verifierMetrics struct {
	verifications *prometheus.CounterVec   // result, source
	duration      *prometheus.HistogramVec // cache: hit, miss
}

func newVerifierMetrics(reg prometheus.Registerer) (*verifierMetrics, error) {
	m := &verifierMetrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keygate",
			Name:      "verifications_total",
			Help:      "Key verifications by result and entry point.",
		}, []string{"result", "source"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keygate",
			Name:      "verification_duration_seconds",
			Help:      "Time to verify a key, by whether the cache answered.",
			Buckets:   []float64{.00001, .00005, .0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"cache"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.verifications, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *verifierMetrics) observe(source Source, result, cache string, d time.Duration) {
	m.verifications.WithLabelValues(result, string(source)).Inc()
	m.duration.WithLabelValues(cache).Observe(d.Seconds())
}
