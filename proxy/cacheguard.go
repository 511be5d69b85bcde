package proxy

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// cacheGuard watches the single-flag response cache and steps it aside
// when it stops paying: a cache whose hit rate has collapsed (contexts that
// never repeat, a flag set that changes faster than entries are reused)
// costs a key build, a lookup and a Set per evaluation for nothing, and a
// lookup that costs more than the evaluation it saves (sampled: one lookup
// in 64 is timed, and one miss's evaluation) makes every hit a loss. Over
// each window of guardWindow lookups the hit rate is computed; below
// guardMinHitRate the cache is bypassed for guardBypassFor, then tried
// again. Each transition is logged once and shown in /v1/status; the
// answers never change, only where they come from.
//
// Lookups are counted with two atomics (no lock on the hot path); the
// window check runs on the lookup that completes a window.
type cacheGuard struct {
	log   *zap.Logger
	gauge prometheus.Gauge

	lookups     atomic.Uint64
	hits        atomic.Uint64
	bypassUntil atomic.Int64 // unix nanoseconds; 0: not bypassed
	lastRate    atomic.Uint64
	reason      atomic.Value // string: why the last bypass began
	now         func() time.Time

	// Sampled costs (EWMA, nanoseconds) of a cache lookup and of the
	// evaluation a miss does instead: a cache slower than evaluating is
	// stepped aside too.
	samples  atomic.Uint64
	lookupNs atomic.Int64
	evalNs   atomic.Int64

	inc incidentSlot // incidents.go: bypass transitions and answers
}

// guardSampleMask: one lookup in 64 is timed.
const guardSampleMask = 63

// sample reports whether this lookup should be timed.
func (g *cacheGuard) sample() bool { return g.samples.Add(1)&guardSampleMask == 0 }

func ewma(v *atomic.Int64, d time.Duration) {
	old := v.Load()
	if old == 0 {
		v.Store(int64(d))
		return
	}
	v.Store(old + (int64(d)-old)/8)
}

func (g *cacheGuard) observeLookup(d time.Duration) { ewma(&g.lookupNs, d) }
func (g *cacheGuard) observeEval(d time.Duration)   { ewma(&g.evalNs, d) }

const (
	guardWindow     = 2048
	guardMinHitRate = 0.05
	guardBypassFor  = 30 * time.Second
)

func newCacheGuard(log *zap.Logger, gauge prometheus.Gauge) *cacheGuard {
	return &cacheGuard{log: log, gauge: gauge, now: time.Now}
}

// bypassed reports whether the cache is stepped aside now; when a bypass
// period ends it says so once and starts a fresh window.
func (g *cacheGuard) bypassed() bool {
	until := g.bypassUntil.Load()
	if until == 0 {
		return false
	}
	if g.now().UnixNano() < until {
		if h := g.inc.hook(); h != nil {
			h.BypassedAnswer()
		}
		return true
	}
	if g.bypassUntil.CompareAndSwap(until, 0) {
		g.lookups.Store(0)
		g.hits.Store(0)
		g.lookupNs.Store(0)
		g.evalNs.Store(0)
		g.gauge.Set(0)
		g.log.Info("response cache back in use: probing its hit rate again")
		if h := g.inc.hook(); h != nil {
			h.CacheBypass(false, "")
		}
	}
	return false
}

// record counts one lookup and, at the end of a window, decides.
func (g *cacheGuard) record(hit bool) {
	if hit {
		g.hits.Add(1)
	}
	n := g.lookups.Add(1)
	if n < guardWindow {
		return
	}
	if !g.lookups.CompareAndSwap(n, 0) {
		return // another lookup closed this window
	}
	h := g.hits.Swap(0)
	rate := float64(h) / float64(n)
	g.lastRate.Store(uint64(rate * 1e6))
	lookup, eval := time.Duration(g.lookupNs.Load()), time.Duration(g.evalNs.Load())
	var why string
	switch {
	case rate < guardMinHitRate:
		why = "hit rate collapsed"
	case lookup > 0 && eval > 0 && lookup > eval:
		why = "a lookup costs more than evaluating"
	default:
		return
	}
	if g.bypassUntil.CompareAndSwap(0, g.now().Add(guardBypassFor).UnixNano()) {
		g.reason.Store(why)
		g.gauge.Set(1)
		g.log.Warn("response cache bypassed: "+why+", evaluating directly",
			zap.Float64("hitRate", rate), zap.Uint64("lookups", n), zap.Duration("lookupCost", lookup),
			zap.Duration("evalCost", eval), zap.Duration("for", guardBypassFor))
		if h := g.inc.hook(); h != nil {
			h.CacheBypass(true, why)
		}
	}
}

// cacheGuardStatus is the guard's part of /v1/status.
type cacheGuardStatus struct {
	Bypassed    bool       `json:"bypassed"`
	Until       *time.Time `json:"bypassedUntil,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	LastHitRate float64    `json:"lastWindowHitRate"`
	LookupCost  string     `json:"sampledLookupCost,omitempty"`
	EvalCost    string     `json:"sampledEvalCost,omitempty"`
}

func (g *cacheGuard) status() cacheGuardStatus {
	st := cacheGuardStatus{LastHitRate: float64(g.lastRate.Load()) / 1e6}
	if until := g.bypassUntil.Load(); until != 0 {
		t := time.Unix(0, until).UTC()
		st.Bypassed, st.Until = true, &t
		st.Reason, _ = g.reason.Load().(string)
	}
	if v := g.lookupNs.Load(); v > 0 {
		st.LookupCost = time.Duration(v).String()
	}
	if v := g.evalNs.Load(); v > 0 {
		st.EvalCost = time.Duration(v).String()
	}
	return st
}
