package proxy

import (
	"sync"
	"sync/atomic"
	"time"

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

	// counters holds the evaluations counter of each (flag, variant,
	// reason, code), found without a lock (counters.go); mu serialises
	// inserts and guards the cardinality count.
	mu       sync.Mutex
	counters *counterTable
	nCounter int // keys resolved, including those past maxCounterKeys (under mu)
	// series are the (flag, variant, reason) label sets given their own
	// series (under mu), at most maxSeries; past that a new one counts in
	// the flag="_other" series of its reason. A sidecar serving 100,000
	// flags gave every flag its series on the first bulk answer: 138 MB
	// of heap and an 8 MB scrape. Usage counts (usage.go) stay per flag.
	series    map[[3]string]struct{}
	maxSeries int

	plansMu sync.Mutex
	plans   []*bulkPlan // bulk plans whose precomputed evaluations still need flushing

	// deg is the server's degrader, reached from here by the bulk plans
	// (degrade.go); nil evaluates every flag with its full rule.
	deg *degrader
	// usage, when counting is on, wraps every evaluations counter so it
	// counts for usage reports too (usage.go).
	usage *usage
}

// flushingCollector is the evaluations counter: before each scrape it adds
// the bulk answers' precomputed evaluations (bulkPlan.flush), so a scrape
// always includes every answer served before it.
type flushingCollector struct {
	*prometheus.CounterVec
	flush func()
}

func (f flushingCollector) Collect(ch chan<- prometheus.Metric) {
	f.flush()
	f.CounterVec.Collect(ch)
}

type counterKey struct {
	flag, variant string
	reason        evaluator.Reason
	code          evaluator.ErrorCode
}

func newMetrics(reg prometheus.Registerer, src Source, maxSeries int) *metrics {
	if maxSeries <= 0 {
		maxSeries = DefaultMaxFlagSeries
	}
	m := &metrics{
		maxSeries: maxSeries,
		counters:  newCounterTable(),
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
	for _, c := range []prometheus.Collector{flushingCollector{m.evals, m.flushBulk}, m.errors, m.latency, m.cacheHit, m.cacheMiss, m.inFlight, m.requests, m.panics, m.sseConns, m.expired, m.failModes, version, flags} {
		reg.MustRegister(c)
	}
	return m
}

// countEval counts one evaluation result and returns its counter.
func (m *metrics) countEval(flagKnown bool, r *evaluator.Result) prometheus.Counter {
	k := counterKey{flag: r.Key, variant: r.Variant, reason: r.Reason, code: r.ErrorCode}
	if !flagKnown {
		k.flag = "" // unknown keys come from clients: never a label value
	}
	if k.code != evaluator.CodeNone {
		m.errors.WithLabelValues(string(k.code)).Inc()
	}
	c := m.counter(k)
	c.Inc()
	return c
}

// counter resolves the evaluations counter for k.
func (m *metrics) counter(k counterKey) prometheus.Counter {
	h := m.counters.hashOf(&k)
	if e := m.counters.find(&k, h); e != nil {
		return m.handOut(e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.counters.find(&k, h); e != nil {
		return m.handOut(e)
	}
	c := m.seriesFor(k)
	if m.nCounter >= maxCounterKeys {
		// Cardinality guard: past this, count without keeping the key.
		if m.usage != nil {
			return m.usage.wrap(c)
		}
		return c
	}
	e := &evalCounter{Counter: c, key: k, hash: h}
	m.counters.insert(e)
	m.nCounter++
	return m.handOut(e)
}

// handOut is the counter an evaluation of e's key increments: the bare
// series, or with usage on the series and the usage count.
func (m *metrics) handOut(e *evalCounter) prometheus.Counter {
	if m.usage != nil {
		return (*usageEvalCounter)(e)
	}
	return e.Counter
}

// DefaultMaxFlagSeries is how many (flag, variant, reason) label sets of
// pennon_evaluations_total get their own series (Options.MaxFlagSeries).
const DefaultMaxFlagSeries = 10000

// OtherFlag is the flag and variant label of the series counting the
// evaluations past the series cap.
const OtherFlag = "_other"

// maxCounterKeys bounds the counter cache; keys come only from the flag
// set's flags, variants, reasons and error codes, so this is a guard
// against a bug, not a limit a flag set reaches.
const maxCounterKeys = 1_000_000

// seriesFor returns k's series of pennon_evaluations_total, or its
// reason's _other series once maxSeries label sets have their own (mu held).
func (m *metrics) seriesFor(k counterKey) prometheus.Counter {
	sk := [3]string{k.flag, k.variant, string(k.reason)}
	if _, ok := m.series[sk]; !ok {
		if len(m.series) >= m.maxSeries {
			return m.evals.WithLabelValues(OtherFlag, OtherFlag, string(k.reason))
		}
		if m.series == nil {
			m.series = map[[3]string]struct{}{}
		}
		m.series[sk] = struct{}{}
	}
	return m.evals.WithLabelValues(sk[0], sk[1], sk[2])
}

// addPlan and retirePlan track the bulk plans flushBulk must visit: the
// current one, and replaced ones for planRetention after the swap (a
// request that loaded a plan just before it was replaced still counts).
func (m *metrics) addPlan(p *bulkPlan) {
	m.plansMu.Lock()
	m.plans = append(m.plans, p)
	m.plansMu.Unlock()
	m.flushBulk() // also prunes: the list stays short without scrapes
}

func (m *metrics) retirePlan(p *bulkPlan) { p.retired.Store(time.Now().UnixNano()) }

// flushBulk adds every plan's precomputed evaluations to their counters
// and forgets plans retired long enough ago.
func (m *metrics) flushBulk() {
	m.plansMu.Lock()
	defer m.plansMu.Unlock()
	keep := m.plans[:0]
	for _, p := range m.plans {
		p.flush()
		if r := p.retired.Load(); r == 0 || time.Since(time.Unix(0, r)) < planRetention {
			keep = append(keep, p)
		}
	}
	clear(m.plans[len(keep):])
	m.plans = keep
}

// degradeMetrics are the series of graceful degradation (degrade.go).
type degradeMetrics struct {
	answers *prometheus.CounterVec
	d       atomic.Pointer[degrader]
}

func newDegradeMetrics(reg prometheus.Registerer) *degradeMetrics {
	m := &degradeMetrics{answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_targeting_fallback_answers_total",
		Help: "Answers served by a flag's fallbackTargeting instead of its targeting, by flag and reason (cost: the rule is over its budget; overload: too many requests in flight)."},
		[]string{"flag", "reason"})}
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_targeting_degraded_flags",
		Help: "Flags being served by their fallbackTargeting now."}, func() float64 {
		if d := m.d.Load(); d != nil {
			return float64(d.degraded.Load())
		}
		return 0
	})
	overloaded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_overloaded",
		Help: "1 while the sidecar counts more OFREP requests in flight than --overload-inflight (flags with fallbackTargeting serve it)."}, func() float64 {
		if d := m.d.Load(); d != nil && d.overloaded.Load() {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.answers, degraded, overloaded)
	return m
}

func (m *degradeMetrics) bind(d *degrader) { m.d.Store(d) }
