package proxy

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/usage/delta"
)

// Usage counting (docs/usage.md). The sidecar already resolves one
// evaluations counter per (flag, variant, reason, error code) and keeps it
// where the hot paths find it without hashing: in the bulk plans, the
// outcome lists and the response-cache entries (a cache hit increments the
// counters of the evaluations it replaces). Usage rides on those same
// counters: with counting on, each is handed out as a usageEvalCounter
// (counters.go), which adds one
// atomic increment next to Prometheus's. So counting costs no lookup and
// no lock, cache hits are counted exactly like misses, and bulk answers'
// precomputed flags are counted per answer through the plan's flush.
//
// The calling app (the X-Pennon-App header) is the one dimension the
// shared counters cannot carry, since one cache entry serves every app. It
// is counted per (app, flag) on its own, and only for requests that carry
// the header: a single evaluation adds one to the app's counter for that
// flag, a bulk answer adds one to the app's counter for the plan it was
// built from, expanded to every flag of the plan when reported.

// AppHeader names the calling app. Values are 1-64 characters of
// [A-Za-z0-9._-]; others, and apps past MaxApps, count as "other".
const AppHeader = "X-Pennon-App"

var appHeaderKey = []byte(AppHeader)

// Bounds on the usage state (docs/usage.md, "Memory").
const (
	// MaxApps is the number of distinct app names a sidecar counts
	// separately (for its lifetime); later ones count as "other".
	MaxApps = 64
	// maxAppLookups bounds the names remembered as mapping to "other", so
	// a client rotating names cannot grow the table (past it such requests
	// take a lock to be counted).
	maxAppLookups = 1024
	// maxAppFlags bounds the flags counted per app.
	maxAppFlags = 10000
	// usageBudget is the approximate payload size one Take returns; what
	// does not fit is kept for the next Take, so a burst of new keys is
	// reported over several intervals and never lost.
	usageBudget = 384 << 10
	// otherApp collects apps past MaxApps and refused names.
	otherApp  = "other"
	maxAppLen = 64
)

// overflowCounter is the counter of a key past the counters' cardinality
// guard (metrics.counter): it counts into the shared overflow count,
// reported as unknown-flag evaluations.
type overflowCounter struct {
	prometheus.Counter
	n *atomic.Uint64
}

func (c overflowCounter) Inc() { c.Counter.Inc(); c.n.Add(1) }

func (c overflowCounter) Add(v float64) { c.Counter.Add(v); c.n.Add(uint64(v)) }

// usage is a sidecar's usage state; nil when counting is off.
type usage struct {
	m *metrics

	appsMu sync.Mutex
	apps   atomic.Pointer[map[string]*appUsage] // header value → app (several names may map to "other")
	named  int                                  // distinct apps counted separately

	overflow atomic.Uint64 // evaluations past the counters' cardinality guard

	takeMu sync.Mutex // one Take at a time; guards the carries
	carry  map[counterKey]uint64
	carryA map[appFlag]uint64
}

type appFlag struct{ app, flag string }

// appUsage is one calling app's counters.
type appUsage struct {
	name  string
	mu    sync.Mutex
	flags atomic.Pointer[map[string]*atomic.Uint64]
	plans atomic.Pointer[map[*bulkPlan]*atomic.Uint64]
}

func newUsage(m *metrics) *usage {
	u := &usage{m: m, carry: map[counterKey]uint64{}, carryA: map[appFlag]uint64{}}
	empty := map[string]*appUsage{}
	u.apps.Store(&empty)
	return u
}

// wrap makes c, the evaluations counter of a key past the counters'
// cardinality guard, count usage into the shared overflow count.
func (u *usage) wrap(c prometheus.Counter) prometheus.Counter {
	return overflowCounter{Counter: c, n: &u.overflow}
}

// app returns the calling app of the request, nil when it names none.
func (u *usage) app(ctx *fasthttp.RequestCtx) *appUsage {
	if u == nil {
		return nil
	}
	// fasthttp stores header names in canonical form (it normalizes them
	// as it parses), so the canonical lookup finds the header without
	// copying and normalizing the key on every request.
	b := ctx.Request.Header.PeekCanonical(appHeaderKey)
	if len(b) == 0 {
		return nil
	}
	if a, ok := (*u.apps.Load())[string(b)]; ok {
		return a
	}
	return u.addApp(string(b))
}

func validAppName(s string) bool {
	if len(s) == 0 || len(s) > maxAppLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// addApp resolves a name not yet in the table (the slow path, locked).
func (u *usage) addApp(name string) *appUsage {
	u.appsMu.Lock()
	defer u.appsMu.Unlock()
	cur := *u.apps.Load()
	if a, ok := cur[name]; ok {
		return a
	}
	target := name
	if !validAppName(name) || u.named >= MaxApps {
		target = otherApp
	}
	a, ok := cur[target]
	if !ok {
		a = &appUsage{name: target}
		ef := map[string]*atomic.Uint64{}
		a.flags.Store(&ef)
		ep := map[*bulkPlan]*atomic.Uint64{}
		a.plans.Store(&ep)
		if target != otherApp {
			u.named++
		}
	}
	if len(cur) >= MaxApps+maxAppLookups && target == otherApp && ok {
		return a // remembered names are full: answer without growing the table
	}
	next := make(map[string]*appUsage, len(cur)+2)
	for k, v := range cur {
		next[k] = v
	}
	next[name] = a
	next[target] = a
	u.apps.Store(&next)
	return a
}

// flag counts one evaluation of flag (empty: unknown) for the app.
func (a *appUsage) flag(key string) {
	if c, ok := (*a.flags.Load())[key]; ok {
		c.Add(1)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := *a.flags.Load()
	c, ok := cur[key]
	if !ok {
		if len(cur) >= maxAppFlags {
			key = ""
			if c, ok = cur[key]; ok {
				c.Add(1)
				return
			}
		}
		c = new(atomic.Uint64)
		next := make(map[string]*atomic.Uint64, len(cur)+1)
		for k, v := range cur {
			next[k] = v
		}
		next[key] = c
		a.flags.Store(&next)
	}
	c.Add(1)
}

// bulk counts one bulk answer built from p for the app.
func (a *appUsage) bulk(p *bulkPlan) {
	if c, ok := (*a.plans.Load())[p]; ok {
		c.Add(1)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := *a.plans.Load()
	c, ok := cur[p]
	if !ok {
		c = new(atomic.Uint64)
		next := make(map[*bulkPlan]*atomic.Uint64, len(cur)+1)
		for k, v := range cur {
			next[k] = v
		}
		next[p] = c
		a.plans.Store(&next)
	}
	c.Add(1)
}

// Kind is the telemetry kind of usage reports (telemetry.Source).
func (u *usage) Kind() string { return delta.Kind }

// Take returns the evaluations counted since the previous Take as a
// delta.Payload, nil when there were none (telemetry.Source).
func (u *usage) Take() (json.RawMessage, error) {
	u.takeMu.Lock()
	defer u.takeMu.Unlock()
	u.m.flushBulk() // bulk answers' precomputed flags
	u.m.counters.each(func(c *evalCounter) {
		if n := c.n.Swap(0); n > 0 {
			u.carry[c.key] += n
		}
	})
	if n := u.overflow.Swap(0); n > 0 {
		u.carry[counterKey{code: evaluator.CodeFlagNotFound, reason: evaluator.ReasonError}] += n
	}
	u.takeApps()

	var p delta.Payload
	size := 0
	for k, n := range u.carry {
		if size > usageBudget {
			break
		}
		p.Counts = append(p.Counts, delta.Count{Flag: k.flag, Variant: k.variant, Reason: string(k.reason), Code: string(k.code), N: n})
		size += len(k.flag) + len(k.variant) + len(k.reason) + len(k.code) + 40
		delete(u.carry, k)
	}
	for k, n := range u.carryA {
		if size > usageBudget {
			break
		}
		p.Apps = append(p.Apps, delta.AppCount{App: k.app, Flag: k.flag, N: n})
		size += len(k.app) + len(k.flag) + 24
		delete(u.carryA, k)
	}
	if len(p.Counts) == 0 && len(p.Apps) == 0 {
		return nil, nil
	}
	return json.Marshal(&p)
}

// takeApps moves the apps' counts into carryA, expanding bulk answers to
// the flags of their plan, and forgets plans replaced long enough ago that
// no request can still be counting into them.
func (u *usage) takeApps() {
	seen := map[*appUsage]bool{}
	for _, a := range *u.apps.Load() {
		if seen[a] {
			continue
		}
		seen[a] = true
		for k, c := range *a.flags.Load() {
			if n := c.Swap(0); n > 0 {
				u.carryA[appFlag{a.name, k}] += n
			}
		}
		var stale []*bulkPlan
		for p, c := range *a.plans.Load() {
			if n := c.Swap(0); n > 0 {
				for _, k := range p.snap.Keys() {
					u.carryA[appFlag{a.name, k}] += n
				}
			}
			if r := p.retired.Load(); r != 0 && time.Since(time.Unix(0, r)) > 2*planRetention {
				stale = append(stale, p)
			}
		}
		if len(stale) > 0 {
			a.mu.Lock()
			cur := *a.plans.Load()
			next := make(map[*bulkPlan]*atomic.Uint64, len(cur))
			for k, v := range cur {
				next[k] = v
			}
			for _, p := range stale {
				if n := next[p].Swap(0); n > 0 { // counted since the pass above
					for _, k := range p.snap.Keys() {
						u.carryA[appFlag{a.name, k}] += n
					}
				}
				delete(next, p)
			}
			a.plans.Store(&next)
			a.mu.Unlock()
		}
	}
}

// UsageSource is the sidecar's usage counts as a telemetry source (Kind
// "usage", Take returning a delta.Payload); nil when Options.NoUsage.
// Shipping it is the caller's business (cmd/pennon wires a
// telemetry.Shipper).
func (s *Server) UsageSource() interface {
	Kind() string
	Take() (json.RawMessage, error)
} {
	if s.usage == nil {
		return nil
	}
	return s.usage
}
