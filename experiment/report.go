package experiment

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/experiment/stats"
)

// Report is an experiment's statistics, as the API and CLI show them.
type Report struct {
	Env     string    `json:"env"`
	Flag    string    `json:"flag"`
	Control string    `json:"control"`
	Updated time.Time `json:"updated,omitzero"`
	// Verdict is the one line to read first.
	Verdict  string           `json:"verdict"`
	Warnings []string         `json:"warnings,omitempty"`
	Variants []VariantSummary `json:"variants"`
	// SRM compares units per variant with the configured split. A
	// mismatch means assignment or exposure logging is broken.
	SRM     stats.SRM      `json:"srm"`
	Metrics []MetricReport `json:"metrics"`
	// Series is the conversion rate per variant over time, per metric
	// (hourly, cumulative), for the picture.
	Series []SeriesPoint `json:"series,omitempty"`
	// NoUnit and Overflow are env-wide exposures that could not be
	// attributed (no targeting key) or enrolled (sidecar unit cap).
	NoUnit   uint64 `json:"unattributedExposures,omitempty"`
	Overflow uint64 `json:"overflowExposures,omitempty"`
}

// VariantSummary is one variant's exposure.
type VariantSummary struct {
	Variant  string  `json:"variant"`
	Control  bool    `json:"control,omitempty"`
	Units    uint64  `json:"units"`
	Expected float64 `json:"expectedShare"`
	Observed float64 `json:"observedShare"`
}

// MetricReport is one metric across variants.
type MetricReport struct {
	Key       string          `json:"key"`
	Guardrail bool            `json:"guardrail,omitempty"`
	Better    string          `json:"better"`
	Variants  []MetricVariant `json:"variants"`
}

// MetricVariant is one variant on one metric.
type MetricVariant struct {
	Variant   string          `json:"variant"`
	Units     uint64          `json:"units"`
	Converted uint64          `json:"converted"`
	Rate      stats.Interval  `json:"conversionRate"`
	Events    uint64          `json:"events"`
	Values    uint64          `json:"values"`
	Mean      *stats.Interval `json:"meanValue,omitempty"` // nil: no event carried a value
	// VsControl is absent for the control itself.
	VsControl *Comparison `json:"vsControl,omitempty"`
}

// Comparison is a treatment against the control on one metric.
type Comparison struct {
	Conversion stats.Test  `json:"conversion"`      // two-proportion z-test
	Value      *stats.Test `json:"value,omitempty"` // Welch's t-test on event values
	// Outcome: better, worse, no significant difference, or hurts guardrail.
	Outcome string `json:"outcome"`
}

// SeriesPoint is one hour: per variant, the conversion rate (with its
// interval) of each metric, cumulative up to that hour.
type SeriesPoint struct {
	Hour  time.Time                            `json:"hour"`
	Rates map[string]map[string]stats.Interval `json:"rates"` // metric → variant → rate
}

// Outcomes of a comparison.
const (
	OutcomeBetter         = "better"
	OutcomeWorse          = "worse"
	OutcomeNoDifference   = "no significant difference"
	OutcomeHurtsGuardrail = "hurts guardrail"
)

// Build computes the report of flag f (its definition in env) from the
// aggregated snapshot.
func Build(env, key string, f *config.FlagDoc, snap Snapshot) (*Report, error) {
	if f == nil || f.Experiment == nil {
		return nil, fmt.Errorf("flag %q is not an experiment (it has no \"experiment\" field)", key)
	}
	e := f.Experiment
	variants := make([]string, 0, len(f.Variants))
	for v := range f.Variants {
		variants = append(variants, v)
	}
	sort.Strings(variants)
	// Units reported for variants the flag no longer has still count for
	// the sample-ratio check: they are exposures that happened.
	for v := range snap.Totals {
		if _, ok := f.Variants[v]; !ok {
			variants = append(variants, v)
		}
	}
	split := e.ExpectedSplit(variants)
	r := &Report{Env: env, Flag: key, Control: e.Control, Updated: snap.Updated, NoUnit: snap.NoUnit, Overflow: snap.Overflow}
	total := uint64(0)
	units := make([]uint64, len(variants))
	weights := make([]float64, len(variants))
	for i, v := range variants {
		if d := snap.Totals[v]; d != nil {
			units[i] = d.Exposed
		}
		weights[i] = split[v]
		total += units[i]
	}
	for i, v := range variants {
		vs := VariantSummary{Variant: v, Control: v == e.Control, Units: units[i], Expected: weights[i]}
		if total > 0 {
			vs.Observed = float64(units[i]) / float64(total)
		}
		r.Variants = append(r.Variants, vs)
	}
	r.SRM = stats.SampleRatio(units, weights)
	for _, m := range e.Metrics {
		r.Metrics = append(r.Metrics, metricReport(m, e.Control, variants, snap.Totals))
	}
	r.Series = series(e, variants, snap.Series)
	r.Verdict, r.Warnings = verdict(r, units, variants)
	return r, nil
}

func metricReport(m config.ExperimentMetric, control string, variants []string, totals Totals) MetricReport {
	better := m.Better
	if better == "" {
		better = config.BetterHigher
	}
	mr := MetricReport{Key: m.Key, Guardrail: m.Guardrail, Better: better}
	get := func(v string) (uint64, MetricDelta) {
		d := totals[v]
		if d == nil {
			return 0, MetricDelta{}
		}
		if md := d.Metrics[m.Key]; md != nil {
			return d.Exposed, *md
		}
		return d.Exposed, MetricDelta{}
	}
	cu, cm := get(control)
	for _, v := range variants {
		u, md := get(v)
		mv := MetricVariant{Variant: v, Units: u, Converted: min(md.Converted, u), Rate: stats.Proportion(min(md.Converted, u), u),
			Events: md.Events, Values: md.Values}
		if md.Values > 0 {
			iv := stats.MeanInterval(stats.Moments{N: md.Values, Sum: md.Sum, SumSq: md.SumSq})
			mv.Mean = &iv
		}
		if v != control {
			c := &Comparison{Conversion: stats.TwoProportions(min(cm.Converted, cu), cu, min(md.Converted, u), u)}
			if cm.Values > 1 && md.Values > 1 {
				t := stats.Welch(stats.Moments{N: cm.Values, Sum: cm.Sum, SumSq: cm.SumSq}, stats.Moments{N: md.Values, Sum: md.Sum, SumSq: md.SumSq})
				c.Value = &t
			}
			c.Outcome = outcome(c.Conversion, better, m.Guardrail)
			mv.VsControl = c
		}
		mr.Variants = append(mr.Variants, mv)
	}
	return mr
}

// outcome reads a conversion test in the metric's good direction.
func outcome(t stats.Test, better string, guardrail bool) string {
	if !t.Significant || math.IsNaN(t.Difference.Estimate) {
		return OutcomeNoDifference
	}
	up := t.Difference.Estimate > 0
	if up == (better == config.BetterHigher) {
		return OutcomeBetter
	}
	if guardrail {
		return OutcomeHurtsGuardrail
	}
	return OutcomeWorse
}

func series(e *config.Experiment, variants []string, pts []Point) []SeriesPoint {
	out := make([]SeriesPoint, 0, len(pts))
	for _, p := range pts {
		sp := SeriesPoint{Hour: p.Hour, Rates: map[string]map[string]stats.Interval{}}
		for _, m := range e.Metrics {
			rates := map[string]stats.Interval{}
			for _, v := range variants {
				d := p.Totals[v]
				if d == nil || d.Exposed == 0 {
					continue
				}
				conv := uint64(0)
				if md := d.Metrics[m.Key]; md != nil {
					conv = min(md.Converted, d.Exposed)
				}
				rates[v] = stats.Proportion(conv, d.Exposed)
			}
			sp.Rates[m.Key] = rates
		}
		out = append(out, sp)
	}
	return out
}

func verdict(r *Report, units []uint64, variants []string) (string, []string) {
	var warns []string
	var small []string
	for i, v := range variants {
		if units[i] < stats.MinUnitsPerVariant {
			small = append(small, fmt.Sprintf("%s (%d)", v, units[i]))
		}
	}
	if len(small) > 0 {
		warns = append(warns, fmt.Sprintf("sample too small: fewer than %d units in %s; intervals are wide and tests unreliable", stats.MinUnitsPerVariant, strings.Join(small, ", ")))
	}
	if r.NoUnit > 0 {
		warns = append(warns, fmt.Sprintf("%d exposures in this environment had no targeting key and are not counted", r.NoUnit))
	}
	if r.Overflow > 0 {
		warns = append(warns, fmt.Sprintf("%d exposures in this environment were not enrolled: sidecars reached their unit cap", r.Overflow))
	}
	if r.SRM.Mismatch {
		return fmt.Sprintf("BROKEN: sample ratio mismatch (χ² = %.1f, p = %.2g): units per variant do not match the configured split, so no other number here can be trusted; check assignment and exposure logging", r.SRM.ChiSquare, r.SRM.P), warns
	}
	var total uint64
	for _, u := range units {
		total += u
	}
	if total == 0 {
		return "no exposures yet", warns
	}
	var hurts, wins, loses []string
	for _, m := range r.Metrics {
		for _, v := range m.Variants {
			if v.VsControl == nil {
				continue
			}
			switch v.VsControl.Outcome {
			case OutcomeHurtsGuardrail:
				hurts = append(hurts, fmt.Sprintf("%s hurts guardrail %s (%+.1f%%, p = %.2g)", v.Variant, m.Key, 100*v.VsControl.Conversion.Lift.Estimate, v.VsControl.Conversion.P))
			case OutcomeBetter:
				wins = append(wins, fmt.Sprintf("%s is better on %s (%+.1f%%, p = %.2g)", v.Variant, m.Key, 100*v.VsControl.Conversion.Lift.Estimate, v.VsControl.Conversion.P))
			case OutcomeWorse:
				loses = append(loses, fmt.Sprintf("%s is worse on %s (%+.1f%%, p = %.2g)", v.Variant, m.Key, 100*v.VsControl.Conversion.Lift.Estimate, v.VsControl.Conversion.P))
			}
		}
	}
	prefix := ""
	if len(small) > 0 {
		prefix = "too early to call; so far: "
	}
	switch {
	case len(hurts) > 0:
		return prefix + strings.Join(append(hurts, append(wins, loses...)...), "; "), warns
	case len(wins)+len(loses) > 0:
		return prefix + strings.Join(append(wins, loses...), "; "), warns
	}
	return prefix + "no significant difference from " + r.Control + " on any metric", warns
}
