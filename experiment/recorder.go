// Package experiment joins exposures to tracked events in sidecars and
// turns their aggregates into per-variant statistics in the control plane.
//
// A sidecar sees every exposure (an experiment flag evaluated for a
// targeting key) and every tracked event of its app. The Recorder keeps,
// per experiment flag, which variant each unit (targeting key) was first
// exposed to, and per variant and metric only streaming aggregates: units
// exposed, units converted, events, sum and sum of squares of their values.
// No raw event is stored. Those aggregates travel as telemetry deltas
// (KindExperiments) and are summed by the control plane's Aggregator.
package experiment

import (
	"encoding/json"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pennon-dev/pennon/telemetry"
)

// DefaultMaxUnits bounds the units (targeting keys) one sidecar remembers
// across all experiments: about 100 bytes each, so ~10 MiB. Units beyond
// it are not enrolled (counted as overflow), which keeps the join exact
// for those that are.
const DefaultMaxUnits = 100_000

// idleAfter: an experiment flag not exposed for this long (it ended, or
// stopped being an experiment) releases its units at the next Take.
const idleAfter = 24 * time.Hour

const shards = 16

// Recorder is the sidecar side. Safe for concurrent use; Expose on the
// evaluation path takes one shard lock of the flag.
type Recorder struct {
	maxUnits int64
	units    atomic.Int64 // enrolled units, all flags
	overflow atomic.Uint64
	noUnit   atomic.Uint64 // exposures without a targeting key
	seed     maphash.Seed
	// gen counts Takes; an exposure marks its flag with the current gen (an
	// atomic load and, once per interval, a store: no clock read on the
	// evaluation path).
	gen atomic.Int64

	// flags is read without a lock on every exposure and replaced whole
	// (under mu) when an experiment appears or is released: there are few
	// experiment flags, and they change rarely.
	mu    sync.Mutex
	flags atomic.Pointer[map[string]*flagRec]
}

type flagRec struct {
	metrics   atomic.Pointer[[]string] // the experiment's event keys, as of the last exposure
	lastGen   atomic.Int64             // Recorder.gen at the flag's last exposure
	idleSince time.Time                // first Take that found no exposure since the previous one (under Recorder.mu)
	shard     [shards]unitShard
}

type unitShard struct {
	mu sync.Mutex
	// units is keyed by a 64-bit seeded hash of the targeting key (one hash
	// per exposure picks the shard and the entry, and no key string is
	// kept); two keys colliding would share one unit, about once in 10^9
	// at the default cap.
	units map[uint64]unit
	agg   map[string]*VariantDelta // variant → delta since the last Take
}

type unit struct {
	variant   string
	converted uint32 // bit i: converted on metrics[i]
}

// NewRecorder returns a recorder remembering at most maxUnits units
// (0: DefaultMaxUnits).
func NewRecorder(maxUnits int) *Recorder {
	if maxUnits <= 0 {
		maxUnits = DefaultMaxUnits
	}
	r := &Recorder{maxUnits: int64(maxUnits), seed: maphash.MakeSeed()}
	r.flags.Store(&map[string]*flagRec{})
	return r
}

func (r *Recorder) flag(key string, metrics []string) *flagRec {
	if f := (*r.flags.Load())[key]; f != nil {
		return f
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.flags.Load()
	if f := cur[key]; f != nil {
		return f
	}
	f := &flagRec{}
	ms := metrics // only this copy escapes, on this path
	f.metrics.Store(&ms)
	for i := range f.shard {
		f.shard[i] = unitShard{units: map[uint64]unit{}, agg: map[string]*VariantDelta{}}
	}
	next := make(map[string]*flagRec, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[key] = f
	r.flags.Store(&next)
	return f
}

func (r *Recorder) unitHash(unitKey string) uint64 { return maphash.String(r.seed, unitKey) }

func (f *flagRec) shardOf(h uint64) *unitShard { return &f.shard[h%shards] }

// Expose records that unitKey was served variant of the experiment flag
// whose metrics are given. Only the first exposure of a unit counts: a
// unit later served another variant (the flag changed) stays with its
// first, as the experiment's analysis assumes.
func (r *Recorder) Expose(flagKey string, metrics []string, unitKey, variant string) {
	if unitKey == "" || variant == "" {
		r.noUnit.Add(1)
		return
	}
	f := r.flag(flagKey, metrics)
	if g := r.gen.Load(); f.lastGen.Load() != g {
		f.lastGen.Store(g)
	}
	if cur := *f.metrics.Load(); len(cur) != len(metrics) || (len(metrics) > 0 && &cur[0] != &metrics[0]) {
		ms := metrics // the definition changed (a new snapshot)
		f.metrics.Store(&ms)
	}
	h := r.unitHash(unitKey)
	sh := f.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.units[h]; ok {
		return
	}
	if r.units.Add(1) > r.maxUnits {
		r.units.Add(-1)
		r.overflow.Add(1)
		return
	}
	sh.units[h] = unit{variant: variant}
	sh.delta(variant).Exposed++
}

func (sh *unitShard) delta(variant string) *VariantDelta {
	d := sh.agg[variant]
	if d == nil {
		d = &VariantDelta{}
		sh.agg[variant] = d
	}
	return d
}

// Track joins a tracked event to every experiment that lists eventKey as a
// metric and has seen unitKey: the unit converts (once per metric) and the
// value, when given, adds to the metric's sums. It reports whether the
// event was joined to any experiment.
func (r *Recorder) Track(eventKey, unitKey string, value float64, hasValue bool) bool {
	if unitKey == "" {
		return false
	}
	joined := false
	h := r.unitHash(unitKey)
	for _, f := range *r.flags.Load() {
		idx := -1
		for i, m := range *f.metrics.Load() {
			if m == eventKey {
				idx = i
				break
			}
		}
		if idx < 0 || idx >= 32 {
			continue
		}
		sh := f.shardOf(h)
		sh.mu.Lock()
		if u, ok := sh.units[h]; ok {
			d := sh.delta(u.variant).metric(eventKey)
			if u.converted&(1<<idx) == 0 {
				u.converted |= 1 << idx
				sh.units[h] = u
				d.Converted++
			}
			d.Events++
			if hasValue {
				d.Values++
				d.Sum += value
				d.SumSq += value * value
			}
			joined = true
		}
		sh.mu.Unlock()
	}
	return joined
}

// Delta is the payload of one KindExperiments batch: what changed since
// the previous one.
type Delta struct {
	Flags map[string]map[string]*VariantDelta `json:"flags,omitempty"` // flag → variant → delta
	// Overflow counts exposures of units not enrolled because the sidecar
	// remembers DefaultMaxUnits (or its configured cap) already.
	Overflow uint64 `json:"overflow,omitempty"`
	// NoUnit counts exposures without a targeting key (not attributable).
	NoUnit uint64 `json:"noUnit,omitempty"`
}

// VariantDelta is one variant's change.
type VariantDelta struct {
	Exposed uint64                  `json:"exposed,omitempty"`
	Metrics map[string]*MetricDelta `json:"metrics,omitempty"`
}

func (v *VariantDelta) metric(key string) *MetricDelta {
	if v.Metrics == nil {
		v.Metrics = map[string]*MetricDelta{}
	}
	m := v.Metrics[key]
	if m == nil {
		m = &MetricDelta{}
		v.Metrics[key] = m
	}
	return m
}

// MetricDelta is one metric's change for one variant.
type MetricDelta struct {
	Converted uint64  `json:"converted,omitempty"` // units with their first event of this key
	Events    uint64  `json:"events,omitempty"`
	Values    uint64  `json:"values,omitempty"` // events that carried a numeric value
	Sum       float64 `json:"sum,omitempty"`
	SumSq     float64 `json:"sumSq,omitempty"`
}

func (m *MetricDelta) add(o *MetricDelta) {
	m.Converted += o.Converted
	m.Events += o.Events
	m.Values += o.Values
	m.Sum += o.Sum
	m.SumSq += o.SumSq
}

func (v *VariantDelta) add(o *VariantDelta) {
	v.Exposed += o.Exposed
	for k, m := range o.Metrics {
		v.metric(k).add(m)
	}
}

// Kind implements telemetry.Source.
func (r *Recorder) Kind() string { return telemetry.KindExperiments }

// Take implements telemetry.Source: the aggregates since the last Take.
// Experiments idle for a day release their units here.
func (r *Recorder) Take() (json.RawMessage, error) {
	out := Delta{Flags: map[string]map[string]*VariantDelta{}, Overflow: r.overflow.Swap(0), NoUnit: r.noUnit.Swap(0)}
	now := time.Now()
	g := r.gen.Add(1) - 1 // the generation that just ended
	r.mu.Lock()
	cur := *r.flags.Load()
	keep := make(map[string]*flagRec, len(cur))
	for key, f := range cur {
		for i := range f.shard {
			sh := &f.shard[i]
			sh.mu.Lock()
			for v, d := range sh.agg {
				if out.Flags[key] == nil {
					out.Flags[key] = map[string]*VariantDelta{}
				}
				if out.Flags[key][v] == nil {
					out.Flags[key][v] = &VariantDelta{}
				}
				out.Flags[key][v].add(d)
			}
			clear(sh.agg)
			sh.mu.Unlock()
		}
		switch {
		case f.lastGen.Load() >= g:
			f.idleSince = time.Time{}
		case f.idleSince.IsZero():
			f.idleSince = now
		}
		if !f.idleSince.IsZero() && now.Sub(f.idleSince) >= idleAfter {
			n := 0
			for i := range f.shard {
				n += len(f.shard[i].units)
			}
			r.units.Add(-int64(n))
			continue // released
		}
		keep[key] = f
	}
	if len(keep) != len(cur) {
		r.flags.Store(&keep)
	}
	r.mu.Unlock()
	if len(out.Flags) == 0 && out.Overflow == 0 && out.NoUnit == 0 {
		return nil, nil
	}
	return json.Marshal(out)
}

// Units is how many units are remembered (all experiments).
func (r *Recorder) Units() int { return int(r.units.Load()) }
