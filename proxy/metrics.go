package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pennon-dev/pennon/evaluator"
)

// metrics are the sidecar's Prometheus series. Counters for
// (flag, variant, reason) are resolved once and then found through an
// immutable map swapped copy-on-write, so counting an evaluation neither
// allocates nor takes a lock.
type metrics struct {
	evals     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	latency   prometheus.Histogram
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
	inFlight  prometheus.Gauge
	requests  *prometheus.CounterVec
	panics    prometheus.Counter
	sseConns  prometheus.Gauge
	expired   *prometheus.CounterVec
	failModes *prometheus.CounterVec

	mu       sync.Mutex
	counters atomic.Pointer[map[counterKey]prometheus.Counter]
}

type counterKey struct {
	flag, variant string
	reason        evaluator.Reason
	code          evaluator.ErrorCode
}

func newMetrics(reg prometheus.Registerer, src Source) *metrics {
	m := &metrics{
		evals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_evaluations_total",
			Help: "Flag evaluations by flag, variant and reason."}, []string{"flag", "variant", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_evaluation_errors_total",
			Help: "Failed evaluations and rejected requests by OFREP error code."}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pennon_evaluation_duration_seconds",
			Help:    "Time to answer an OFREP request, from parsed request to written body.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2}}),
		cacheHit:  prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_cache_hits_total", Help: "Response cache hits."}),
		cacheMiss: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_cache_misses_total", Help: "Response cache misses (cacheable flags only)."}),
		inFlight:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pennon_http_in_flight_requests", Help: "Requests being served."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		panics:   prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_http_panics_total", Help: "Handler panics recovered (each is a bug)."}),
		sseConns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pennon_sse_connections", Help: "Open change-notification streams."}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_expired_flag_evaluations_total",
			Help: "Evaluations of flags past their expires date: retire them."}, []string{"flag"}),
		failModes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_fail_mode_answers_total",
			Help: "Always-fresh answers served on their failMode (closed: safeVariant, open: last known value) because freshness could not be established."}, []string{"mode"}),
	}
	empty := map[counterKey]prometheus.Counter{}
	m.counters.Store(&empty)
	version := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_snapshot_version",
		Help: "Version of the flag set being served (0 before the first load)."}, func() float64 {
		if s := src.Current(); s != nil {
			return float64(s.Version())
		}
		return 0
	})
	flags := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_snapshot_flags",
		Help: "Number of flags being served."}, func() float64 {
		if s := src.Current(); s != nil {
			return float64(s.Len())
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.evals, m.errors, m.latency, m.cacheHit, m.cacheMiss, m.inFlight, m.requests, m.panics, m.sseConns, m.expired, m.failModes, version, flags} {
		reg.MustRegister(c)
	}
	return m
}

// countEval counts one evaluation result.
func (m *metrics) countEval(flagKnown bool, r *evaluator.Result) {
	k := counterKey{flag: r.Key, variant: r.Variant, reason: r.Reason, code: r.ErrorCode}
	if !flagKnown {
		k.flag = "" // unknown keys come from clients: never a label value
	}
	if k.code != evaluator.CodeNone {
		m.errors.WithLabelValues(string(k.code)).Inc()
	}
	if c, ok := (*m.counters.Load())[k]; ok {
		c.Inc()
		return
	}
	m.mu.Lock()
	cur := *m.counters.Load()
	c, ok := cur[k]
	if !ok {
		if len(cur) > 50000 {
			// Cardinality guard: past this, count without caching the series.
			m.mu.Unlock()
			m.evals.WithLabelValues(k.flag, k.variant, string(k.reason)).Inc()
			return
		}
		c = m.evals.WithLabelValues(k.flag, k.variant, string(k.reason))
		next := make(map[counterKey]prometheus.Counter, len(cur)+1)
		for kk, vv := range cur {
			next[kk] = vv
		}
		next[k] = c
		m.counters.Store(&next)
	}
	m.mu.Unlock()
	c.Inc()
}
