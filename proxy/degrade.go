package proxy

import (
	"fmt"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/evaluator"
)

// Graceful degradation of targeting (docs/sidecar.md): a flag that declares
// fallbackTargeting is served with that cheaper rule while its full rule
// costs more than its budget, or while the sidecar is overloaded, and
// returns to the full rule when the pressure is gone.
//
// Cost is measured by sampling: one evaluation in CostSampleEvery of each
// such flag is timed (two clock reads) and folded into an exponentially
// weighted moving average kept in an atomic. Nothing is allocated and no
// lock is taken per request; flags without a fallback pay one boolean test.
//
// Hysteresis keeps a flag from flapping: it degrades when its average
// exceeds the budget and recovers only below half of it. While degraded
// for cost, the sampled evaluations still run (and serve) the full rule:
// they are the probes that notice when it became cheap again.
//
// Overload is the number of OFREP requests being served at once. It is the
// direct measure of queueing in the sidecar (requests arrive faster than
// they are answered), it costs one atomic add per request, and unlike CPU
// usage it does not count the application sharing the pod's cores. The
// sidecar enters overload above OverloadInFlight requests and leaves it at
// half of that. Under overload nothing is sampled: the point is to shed
// work, and the measured cost of the full rule stays what it was.
//
// Fallback answers never enter the response cache: the single-flag path
// answers degraded flags and sampled evaluations without the cache, and
// the bulk path caches no answer built while any flag was degraded, the
// process overloaded, or a transition happened (epoch).

// Targeting modes of a flag, as stored in flagLoad.mode.
const (
	modeFull     uint32 = iota
	modeCost            // fallback: the full rule is over budget
	modeOverload        // fallback: the sidecar is overloaded
)

func modeName(m uint32) string {
	switch m {
	case modeCost:
		return "fallback (cost)"
	case modeOverload:
		return "fallback (overload)"
	}
	return "full"
}

// Defaults of the degradation options (proxy.Options).
const (
	DefaultTargetingBudget  = 50 * time.Microsecond
	DefaultCostSampleEvery  = 64
	DefaultOverloadInFlight = 256
)

// flagLoad is the measured state of one flag with a fallback. It outlives
// snapshots: a new flag set keeps the measurements of the flags it still
// has (the rule may have changed; the next samples say so).
type flagLoad struct {
	key    string
	budget atomic.Int64  // nanoseconds
	n      atomic.Uint32 // evaluations seen, for sampling
	ewma   atomic.Int64  // nanoseconds, 0 before the first sample
	taken  atomic.Uint32 // samples folded into ewma, counted up to minCostSamples
	slow   atomic.Bool   // over budget (with hysteresis)
	mode   atomic.Uint32 // what is served now: modeFull, modeCost, modeOverload
	since  atomic.Int64  // unix nanoseconds of the last transition
	dead   atomic.Bool   // dropped from the table (flag gone or lost its fallback)
	served [2]counterInc // fallback answers, per evaluator.FallbackReason
}

// counterInc is the one method of prometheus.Counter used here.
type counterInc interface{ Inc() }

type degradeIndex struct {
	snap  *evaluator.Snapshot
	flags map[string]*flagLoad
}

// degrader owns the degradation state of a Server.
type degrader struct {
	log      *zap.Logger
	m        *degradeMetrics
	budget   time.Duration // default per-flag budget
	mask     uint32        // sample when n&mask == 0; sampling off when off
	sampling bool
	limit    int64 // overload above this many in-flight requests; 0: off

	inFlight   atomic.Int64
	answered   atomic.Uint64 // OFREP requests answered, for incident records (incidents.go)
	overloaded atomic.Bool
	degraded   atomic.Int64  // flags currently served by their fallback
	epoch      atomic.Uint64 // incremented on every transition

	idx atomic.Pointer[degradeIndex]
	mu  sync.Mutex // serialises index builds

	inc incidentSlot // incidents.go: fallback answers and transitions
}

func newDegrader(o *Options, log *zap.Logger, m *degradeMetrics) (*degrader, error) {
	d := &degrader{log: log, m: m, budget: o.TargetingBudget}
	switch {
	case d.budget == 0:
		d.budget = DefaultTargetingBudget
	case d.budget < 0:
		return nil, fmt.Errorf("proxy: Options.TargetingBudget must be positive (got %s; e.g. 50µs)", o.TargetingBudget)
	}
	every := o.CostSampleEvery
	switch {
	case every == 0:
		every = DefaultCostSampleEvery
	case every < 0:
		every = 0 // measuring off
	case bits.OnesCount(uint(every)) != 1 || every > 1<<20:
		return nil, fmt.Errorf("proxy: Options.CostSampleEvery must be a power of two up to 1048576 (got %d; e.g. 64)", o.CostSampleEvery)
	}
	if every > 0 {
		d.mask, d.sampling = uint32(every-1), true
	}
	switch {
	case o.OverloadInFlight == 0:
		d.limit = DefaultOverloadInFlight
	case o.OverloadInFlight > 0:
		d.limit = int64(o.OverloadInFlight)
	}
	m.bind(d)
	return d, nil
}

// enter and exit bracket one OFREP request (single or bulk).
func (d *degrader) enter() {
	n := d.inFlight.Add(1)
	if d.limit > 0 && n > d.limit && !d.overloaded.Load() && d.overloaded.CompareAndSwap(false, true) {
		d.epoch.Add(1)
		d.log.Warn("sidecar overloaded: flags with fallbackTargeting serve it",
			zap.Int64("inFlight", n), zap.Int64("overloadInFlight", d.limit))
	}
}

func (d *degrader) exit() {
	n := d.inFlight.Add(-1)
	d.answered.Add(1)
	if d.overloaded.Load() && n <= d.limit/2 && d.overloaded.CompareAndSwap(true, false) {
		d.epoch.Add(1)
		d.log.Info("sidecar no longer overloaded: flags return to their full targeting",
			zap.Int64("inFlight", n), zap.Int64("overloadInFlight", d.limit))
	}
}

// load returns f's state, nil when f has no fallback.
func (d *degrader) load(snap *evaluator.Snapshot, f *evaluator.Flag) *flagLoad {
	if !f.HasFallback() {
		return nil
	}
	idx := d.idx.Load()
	if idx == nil || idx.snap != snap {
		if idx != nil && snap.Version() < idx.snap.Version() {
			// A request that loaded the previous flag set just before a
			// swap: state is per key, so the current table serves it,
			// and the table is not rebuilt back and forth.
			return idx.flags[f.Key()]
		}
		idx = d.index(snap)
	}
	return idx.flags[f.Key()]
}

// index builds the state table for snap, keeping the state of flags the
// previous table had.
func (d *degrader) index(snap *evaluator.Snapshot) *degradeIndex {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.idx.Load()
	if old != nil && old.snap == snap {
		return old
	}
	idx := &degradeIndex{snap: snap, flags: map[string]*flagLoad{}}
	for _, key := range snap.Keys() {
		f := snap.Flag(key)
		if !f.HasFallback() {
			continue
		}
		var fl *flagLoad
		if old != nil {
			fl = old.flags[key]
		}
		if fl == nil {
			fl = &flagLoad{key: key}
			fl.served[evaluator.FallbackCost] = d.m.answers.WithLabelValues(key, evaluator.FallbackCost.String())
			fl.served[evaluator.FallbackOverload] = d.m.answers.WithLabelValues(key, evaluator.FallbackOverload.String())
		}
		b := f.TargetingBudget()
		if b <= 0 {
			b = d.budget
		}
		fl.budget.Store(int64(b))
		idx.flags[key] = fl
	}
	if old != nil {
		for key, fl := range old.flags {
			if idx.flags[key] != nil {
				continue
			}
			fl.dead.Store(true) // before the swap: see settle
			if fl.mode.Swap(modeFull) != modeFull {
				d.degraded.Add(-1) // the flag is gone (or lost its fallback)
				d.epoch.Add(1)
			}
		}
	}
	d.idx.Store(idx)
	return idx
}

// want is the mode fl should be served in now.
func (d *degrader) want(fl *flagLoad) uint32 {
	switch {
	case fl.slow.Load():
		return modeCost
	case d.overloaded.Load():
		return modeOverload
	}
	return modeFull
}

// settle moves fl to mode, logging the transition once: of concurrent
// requests seeing the same change, only the one whose swap succeeds logs.
func (d *degrader) settle(fl *flagLoad, mode uint32) {
	old := fl.mode.Load()
	if old == mode || fl.dead.Load() || !fl.mode.CompareAndSwap(old, mode) {
		return
	}
	d.epoch.Add(1)
	switch {
	case old == modeFull:
		d.degraded.Add(1)
	case mode == modeFull:
		d.degraded.Add(-1)
	}
	// A request still holding a state the table just dropped must not
	// leave it counted as degraded: index marks it dead before resetting
	// it, so either index's reset saw this change (and uncounted it) or
	// this sees dead and undoes it.
	if fl.dead.Load() && mode != modeFull && fl.mode.CompareAndSwap(mode, modeFull) {
		d.degraded.Add(-1)
		return
	}
	fl.since.Store(time.Now().UnixNano())
	reason := "recovered"
	switch mode {
	case modeCost:
		reason = "cost over budget"
	case modeOverload:
		reason = "sidecar overloaded"
	}
	msg := "targeting degraded to fallback"
	if mode == modeFull {
		msg = "targeting restored to full rule"
	}
	d.log.Info(msg, zap.String("flag", fl.key), zap.String("from", modeName(old)), zap.String("to", modeName(mode)),
		zap.Duration("cost", time.Duration(fl.ewma.Load())), zap.Duration("budget", time.Duration(fl.budget.Load())),
		zap.String("reason", reason))
	if h := d.inc.hook(); h != nil {
		why := "cost"
		if mode == modeOverload {
			why = "overload"
		}
		h.TargetingChanged(fl.key, why, mode != modeFull)
	}
}

// observe folds one sampled duration into fl's average (weight 1/4: a
// change shows after a few samples, one outlier does not flip the flag)
// and updates its over-budget state with hysteresis. Concurrent samples
// may lose an update; the average only needs to be roughly right.
func (fl *flagLoad) observe(took time.Duration) {
	budget := fl.budget.Load()
	// A sample is wall time: a goroutine descheduled mid-evaluation (a
	// shared core, a GC pause) reads as milliseconds. Capping a sample at
	// twice the budget keeps one such outlier from degrading a flag well
	// under budget (0.75·avg + 0.5·budget stays under budget while avg is
	// under ⅔ of it), while a rule really over budget still converges
	// above it. The average shown in /v1/status is capped the same way.
	sample := min(int64(took), 2*budget)
	old := fl.ewma.Load()
	next := sample
	if old > 0 {
		next = old + (sample-old)/4
	}
	if next <= 0 {
		next = 1 // 0 means "never sampled"
	}
	fl.ewma.Store(next)
	if fl.taken.Load() < minCostSamples {
		// The first samples are the whole average: one descheduled
		// evaluation among them would be it. A flag degrades for cost
		// only once minCostSamples samples agree.
		if fl.taken.Add(1) < minCostSamples {
			return
		}
	}
	switch {
	case next > budget:
		fl.slow.Store(true)
	case next < budget/2:
		fl.slow.Store(false)
	}
}

// minCostSamples is how many samples a flag's average must hold before it
// can degrade the flag for cost. A sample counts at most twice the budget
// and each new one weighs a quarter, so after eight an outlier among them
// weighs at most 0.75⁷·2 ≈ 0.27 budgets: the average stays under budget
// while the other samples are under 0.85 of it.
const minCostSamples = 8

// evaluate answers f when the degradation logic must: handled is false
// when f has no fallback, or is served by its full rule and this
// evaluation is not sampled — then the caller answers as usual (response
// cache included).
func (d *degrader) evaluate(snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) (r evaluator.Result, handled bool) {
	fl := d.load(snap, f)
	if fl == nil {
		return r, false
	}
	mode := d.want(fl)
	if d.sampling && mode != modeOverload && fl.n.Add(1)&d.mask == 0 {
		start := time.Now()
		r = snap.EvaluateFlag(f, ec)
		fl.observe(time.Since(start))
		d.settle(fl, d.want(fl))
		return r, true // the probe's answer is the full rule's: serve it
	}
	d.settle(fl, mode)
	if mode == modeFull {
		return r, false
	}
	why := evaluator.FallbackCost
	if mode == modeOverload {
		why = evaluator.FallbackOverload
	}
	fl.served[why].Inc()
	if h := d.inc.hook(); h != nil {
		h.FallbackAnswer(why == evaluator.FallbackOverload)
	}
	return snap.EvaluateFallback(f, ec, why), true
}

// evaluateFlag is snap.EvaluateFlag through the degradation logic (the
// bulk path, which has no cache per flag).
func (d *degrader) evaluateFlag(snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) evaluator.Result {
	if d != nil {
		if r, ok := d.evaluate(snap, f, ec); ok {
			return r
		}
	}
	return snap.EvaluateFlag(f, ec)
}

// calm reports whether answers of snap built now may be cached (no flag
// degraded, not overloaded) and the epoch to check afterwards with
// stillCalm. It brings the state table to snap first, so a flag that lost
// its fallback (or left the flag set) stops counting as degraded even if
// no flag with a fallback has been asked for since.
func (d *degrader) calm(snap *evaluator.Snapshot) (uint64, bool) {
	if idx := d.idx.Load(); idx != nil && idx.snap != snap && snap.Version() >= idx.snap.Version() {
		d.index(snap)
	}
	return d.state()
}

func (d *degrader) state() (uint64, bool) {
	ep := d.epoch.Load()
	return ep, d.degraded.Load() == 0 && !d.overloaded.Load()
}

// stillCalm reports whether nothing changed since calm returned ep: an
// answer built in between contains no fallback answer.
func (d *degrader) stillCalm(ep uint64) bool {
	cur, ok := d.state()
	return ok && cur == ep
}

// TargetingStatus is the degradation section of /v1/status.
type TargetingStatus struct {
	Overloaded       bool   `json:"overloaded"`
	InFlight         int64  `json:"inFlight"`
	OverloadInFlight int64  `json:"overloadInFlight"` // 0: overload detection off
	DefaultBudget    string `json:"defaultBudget"`
	SampleEvery      int    `json:"sampleEvery"` // 0: cost measuring off
	// FlagsWithFallback counts the flags that declare fallbackTargeting.
	FlagsWithFallback int `json:"flagsWithFallback"`
	// Degraded lists the flags being served by their fallback now.
	Degraded []DegradedFlag `json:"degraded"`
}

// DegradedFlag is one flag served by its fallbackTargeting.
type DegradedFlag struct {
	Flag   string    `json:"flag"`
	Reason string    `json:"reason"` // cost | overload
	Cost   string    `json:"cost"`   // measured average of the full rule ("" before any sample)
	Budget string    `json:"budget"`
	Since  time.Time `json:"since"`
}

func (d *degrader) status(snap *evaluator.Snapshot) *TargetingStatus {
	st := &TargetingStatus{Overloaded: d.overloaded.Load(), InFlight: d.inFlight.Load(), OverloadInFlight: d.limit,
		DefaultBudget: d.budget.String(), Degraded: []DegradedFlag{}}
	if d.sampling {
		st.SampleEvery = int(d.mask) + 1
	}
	if snap == nil {
		return st
	}
	idx := d.idx.Load()
	if idx == nil || idx.snap != snap {
		idx = d.index(snap)
	}
	st.FlagsWithFallback = len(idx.flags)
	for _, fl := range idx.flags {
		// The mode a flag would be served in now: a flag not asked for
		// since the pressure changed has not settled yet.
		mode := d.want(fl)
		if mode == modeFull {
			continue
		}
		df := DegradedFlag{Flag: fl.key, Reason: "cost", Budget: time.Duration(fl.budget.Load()).String()}
		if mode == modeOverload {
			df.Reason = "overload"
		}
		if c := fl.ewma.Load(); c > 0 {
			df.Cost = time.Duration(c).String()
		}
		if ns := fl.since.Load(); ns > 0 && fl.mode.Load() == mode {
			df.Since = time.Unix(0, ns).UTC()
		}
		st.Degraded = append(st.Degraded, df)
	}
	sort.Slice(st.Degraded, func(i, j int) bool { return st.Degraded[i].Flag < st.Degraded[j].Flag })
	return st
}

// evaluateDegradable is the single-flag path's hook: it sets *r and
// reports true when the degradation logic answered f (a fallback answer
// or a sampled probe of the full rule), which the caller must then serve
// without the response cache.
func (s *Server) evaluateDegradable(snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context, r *evaluator.Result) bool {
	res, ok := s.deg.evaluate(snap, f, ec)
	if ok {
		*r = res
	}
	return ok
}

// EvaluateFlag evaluates f against snap as the OFREP endpoints do, through
// the targeting degradation (a flag with fallbackTargeting serves it under
// cost or overload, with metadata saying so). flagd's gRPC services use it
// so both protocols answer alike, and are counted (evaluation metrics and
// usage) and record experiment exposures alike.
func (s *Server) EvaluateFlag(snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) evaluator.Result {
	r := s.deg.evaluateFlag(snap, f, ec)
	s.m.countEval(true, &r)
	if s.o.Experiments != nil && f.ExperimentMetrics() != nil {
		s.expose(f, ec, &r)
	}
	return r
}
