package keystore

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics (README.md, "Metrics") that keystore owns. No label ever carries a
// key ID, subject or secret: label values come from the fixed sets below.

// outcomes are the values of the result label, indexed by outcomeIndex.
var outcomes = [...]string{
	"valid", "missing", "malformed", "not_found", "revoked", "expired",
	"insufficient_scope", "unavailable", "rate_limited", "usage_exceeded",
	"disabled", "ip_not_allowed",
}

// sources are the values of the source label the verifier knows in advance.
var sources = [...]Source{SourceMiddleware, SourceSidecar, SourceForwardAuth, SourceAPI}

// Values of the op label of keygate_store_errors_total.
const (
	opCreate     = "create"
	opGet        = "get"
	opVerify     = "verify"
	opList       = "list"
	opUpdate     = "update"
	opRevoke     = "revoke"
	opDelete     = "delete"
	opFlush      = "last_used_flush"
	opInvalidate = "invalidate"
	opHeartbeat  = "heartbeat"
	opAck        = "ack"
	opSubscribe  = "subscribe"
	opMeter      = "meter"
	opRoll       = "roll"
	opImport     = "import"
)

// verifierMetrics are the verifier's series. The series of the known sources
// and results are resolved once, so that observing one allocates nothing.
type verifierMetrics struct {
	verifications *prometheus.CounterVec   // result, source
	duration      *prometheus.HistogramVec // cache: hit, miss
	invalidations prometheus.Counter
	flushes       *prometheus.CounterVec // reason
	entries       prometheus.Gauge

	bySource [len(sources)][len(outcomes)]prometheus.Counter
	hit      prometheus.Observer
	miss     prometheus.Observer
}

func newVerifierMetrics(reg prometheus.Registerer) (*verifierMetrics, error) {
	verifications := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "verifications_total",
		Help:      "Key verifications by result and entry point.",
	}, []string{"result", "source"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "keygate",
		Name:      "verification_duration_seconds",
		Help:      "Time to verify a key, by whether the cache answered.",
		Buckets:   []float64{.000001, .000005, .00001, .00005, .0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	}, []string{"cache"})
	invalidations := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "cache_invalidations_total",
		Help:      "Cache invalidations handled, one per revoke, update or delete and verifier.",
	})
	flushes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "cache_flushes_total",
		Help:      "Whole-cache flushes of verifiers, by reason: subscription, gap, sequence, unpublished, lapse, malformed.",
	}, []string{"reason"})
	entries := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "keygate",
		Name:      "cache_entries",
		Help:      "Keys held in the verifiers' caches.",
	})
	m := &verifierMetrics{}
	var err error
	if m.verifications, err = register(reg, verifications); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	if m.invalidations, err = register(reg, invalidations); err != nil {
		return nil, err
	}
	if m.flushes, err = register(reg, flushes); err != nil {
		return nil, err
	}
	if m.entries, err = register(reg, entries); err != nil {
		return nil, err
	}
	for i, s := range sources {
		for j, r := range outcomes {
			m.bySource[i][j] = m.verifications.WithLabelValues(r, string(s))
		}
	}
	m.hit = m.duration.WithLabelValues("hit")
	m.miss = m.duration.WithLabelValues("miss")
	return m, nil
}

func (m *verifierMetrics) observe(source Source, outcome int, hit bool, d time.Duration) {
	c := m.counter(source, outcome)
	c.Inc()
	if hit {
		m.hit.Observe(d.Seconds())
	} else {
		m.miss.Observe(d.Seconds())
	}
}

func (m *verifierMetrics) counter(source Source, outcome int) prometheus.Counter {
	for i, s := range sources {
		if s == source {
			return m.bySource[i][outcome]
		}
	}
	return m.verifications.WithLabelValues(outcomes[outcome], string(source))
}

// storeMetrics are the store's series.
type storeMetrics struct {
	flushes prometheus.Counter
	errors  *prometheus.CounterVec // op
}

func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	flushes := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "last_used_flushes_total",
		Help:      "Flushes that wrote last-used times to Redis.",
	})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "store_errors_total",
		Help:      "Redis operations that failed, by operation.",
	}, []string{"op"})
	m := &storeMetrics{}
	var err error
	if m.flushes, err = register(reg, flushes); err != nil {
		return nil, err
	}
	if m.errors, err = register(reg, errs); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under the same description, so that several stores and verifiers in one
// process share their series. A nil reg registers nothing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
