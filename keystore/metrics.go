package keystore

import (
	"errors"
	"sync"
	"sync/atomic"
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

// verifierMetrics are the verifier's series.
type verifierMetrics struct {
	verifications *verificationStats // keygate_verifications_total and keygate_verification_duration_seconds
	invalidations prometheus.Counter
	flushes       *prometheus.CounterVec // reason
	entries       prometheus.Gauge
}

func newVerifierMetrics(reg prometheus.Registerer) (*verifierMetrics, error) {
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
	if m.verifications, err = register(reg, newVerificationStats()); err != nil {
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
	return m, nil
}

// observe counts one verification and its duration, in the stripe sn.
func (m *verifierMetrics) observe(sn *stripe, source Source, outcome int, hit bool, d time.Duration) {
	m.verifications.observe(sn, source, outcome, hit, d)
}

// count counts one verification without a duration.
func (m *verifierMetrics) count(source Source, outcome int) {
	sn := takeStripe()
	m.verifications.count(&m.verifications.stripes[sn.n], source, outcome)
	sn.release()
}

// durationBuckets are the upper bounds of keygate_verification_duration_seconds.
var durationBuckets = [...]float64{.000001, .000005, .00001, .00005, .0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25}

// verificationStats is the collector of keygate_verifications_total{result,
// source} and keygate_verification_duration_seconds{cache}. Every
// verification writes to both, on every core, so the counts are split into
// stripes, each on cache lines of its own, and a core keeps writing to the
// same stripe ([stripe]). One shared counter would pass its cache line from
// core to core on every call, and so would stripes picked at random, each
// written in turn by every core. A scrape sums the stripes.
type verificationStats struct {
	countDesc, durationDesc *prometheus.Desc
	stripes                 [stripes]statStripe

	mu    sync.Mutex
	other map[[2]string]uint64 // result, source → count, for sources beyond the known ones
}

type statStripe struct {
	counts [len(sources)][len(outcomes)]atomic.Uint64
	times  [2]durationStripe // cache hit, miss
	_      [64]byte
}

type durationStripe struct {
	buckets [len(durationBuckets)]atomic.Uint64 // observations in (previous bound, bound]
	count   atomic.Uint64
	nanos   atomic.Int64 // their sum
}

func newVerificationStats() *verificationStats {
	return &verificationStats{
		countDesc: prometheus.NewDesc("keygate_verifications_total",
			"Key verifications by result and entry point.", []string{"result", "source"}, nil),
		durationDesc: prometheus.NewDesc("keygate_verification_duration_seconds",
			"Time to verify a key, by whether the cache answered.", []string{"cache"}, nil),
		other: map[[2]string]uint64{},
	}
}

func (st *verificationStats) observe(sn *stripe, source Source, outcome int, hit bool, d time.Duration) {
	s := &st.stripes[sn.n]
	st.count(s, source, outcome)
	t := &s.times[1]
	if hit {
		t = &s.times[0]
	}
	secs := d.Seconds()
	for i, bound := range durationBuckets {
		if secs <= bound {
			t.buckets[i].Add(1)
			break
		}
	}
	t.count.Add(1)
	t.nanos.Add(int64(d))
}

func (st *verificationStats) count(s *statStripe, source Source, outcome int) {
	for i, known := range sources {
		if known == source {
			s.counts[i][outcome].Add(1)
			return
		}
	}
	st.mu.Lock()
	st.other[[2]string{outcomes[outcome], string(source)}]++
	st.mu.Unlock()
}

// Describe implements [prometheus.Collector].
func (st *verificationStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- st.countDesc
	ch <- st.durationDesc
}

// Collect implements [prometheus.Collector]: every known source and result
// (zero or not), the other sources met, and both histograms.
func (st *verificationStats) Collect(ch chan<- prometheus.Metric) {
	for i, source := range sources {
		for j, result := range outcomes {
			var n uint64
			for k := range st.stripes {
				n += st.stripes[k].counts[i][j].Load()
			}
			ch <- prometheus.MustNewConstMetric(st.countDesc, prometheus.CounterValue, float64(n), result, string(source))
		}
	}
	st.mu.Lock()
	for k, n := range st.other {
		ch <- prometheus.MustNewConstMetric(st.countDesc, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	st.mu.Unlock()
	for h, label := range []string{"hit", "miss"} {
		var count uint64
		var nanos int64
		var perBucket [len(durationBuckets)]uint64
		for k := range st.stripes {
			t := &st.stripes[k].times[h]
			count += t.count.Load()
			nanos += t.nanos.Load()
			for i := range perBucket {
				perBucket[i] += t.buckets[i].Load()
			}
		}
		cumulative := make(map[float64]uint64, len(durationBuckets))
		var below uint64
		for i, bound := range durationBuckets {
			below += perBucket[i]
			cumulative[bound] = below
		}
		ch <- prometheus.MustNewConstHistogram(st.durationDesc, count, time.Duration(nanos).Seconds(), cumulative, label)
	}
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
