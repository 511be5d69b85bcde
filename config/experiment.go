package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Experiment marks a flag as an experiment: sidecars record each unit's
// (targeting key's) first exposure to a variant and join the app's tracked
// events to it, and the control plane reports per-variant rates with
// intervals against the control variant (docs/experiments.md).
type Experiment struct {
	// Control is the variant the others are compared with.
	Control string `json:"control"`
	// Split is the share of units each variant is expected to get (any
	// positive scale), used by the sample-ratio-mismatch check. Absent:
	// equal shares over the flag's variants.
	Split map[string]float64 `json:"split,omitempty"`
	// Metrics are tracking-event keys (OFREP /v1/track "key") this
	// experiment cares about.
	Metrics []ExperimentMetric `json:"metrics"`
}

// ExperimentMetric is one tracked event key.
type ExperimentMetric struct {
	Key string `json:"key"`
	// Guardrail metrics must not get worse: the report says "hurts
	// guardrail" when a treatment is significantly worse on one.
	Guardrail bool `json:"guardrail,omitempty"`
	// Better is the direction that is good: "higher" (default) or "lower".
	Better string `json:"better,omitempty"`
}

// Directions of ExperimentMetric.Better.
const (
	BetterHigher = "higher"
	BetterLower  = "lower"
)

// MaxExperimentMetrics bounds the metrics of one experiment (each costs a
// few counters per variant in every sidecar).
const MaxExperimentMetrics = 16

var (
	experimentFields = []string{"control", "metrics", "split"}
	metricFields     = []string{"better", "guardrail", "key"}
	metricKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
)

// experiment parses a flag's "experiment"; variants are the flag's.
func (p *parser) experiment(raw json.RawMessage, path string, variants map[string]json.RawMessage) *Experiment {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		p.add(path, "must be an object with %s", strings.Join(experimentFields, ", "))
		return nil
	}
	if u := unknownFields(obj, experimentFields); len(u) > 0 {
		p.add(path, "unknown field(s) %s (allowed: %s)", strings.Join(u, ", "), strings.Join(experimentFields, ", "))
	}
	e := &Experiment{}
	names := strings.Join(keysOf(variants), ", ")
	if b, ok := obj["control"]; !ok || json.Unmarshal(b, &e.Control) != nil || e.Control == "" {
		p.add(path+".control", "is required: the name of the variant the others are compared with (one of %s)", names)
	} else if _, ok := variants[e.Control]; !ok {
		p.add(path+".control", "%q is not a variant of this flag (variants: %s)", e.Control, names)
	}
	if b, ok := obj["split"]; ok {
		if err := json.Unmarshal(b, &e.Split); err != nil {
			p.add(path+".split", "must map variant names to expected shares (numbers), e.g. {\"on\": 50, \"off\": 50}")
		} else {
			total := 0.0
			for _, v := range keysOf(e.Split) {
				switch w := e.Split[v]; {
				case variants[v] == nil:
					p.add(path+".split."+v, "is not a variant of this flag (variants: %s)", names)
				case w < 0 || w != w:
					p.add(path+".split."+v, "must be a share of 0 or more, got %v", w)
				default:
					total += w
				}
			}
			if total <= 0 && len(e.Split) > 0 {
				p.add(path+".split", "needs at least one variant with a positive share")
			}
		}
	}
	b, ok := obj["metrics"]
	if !ok || json.Unmarshal(b, &e.Metrics) != nil || len(e.Metrics) == 0 {
		p.add(path+".metrics", "is required: a list of 1-%d metrics like {\"key\": \"purchase\"} (tracking event keys)", MaxExperimentMetrics)
		return e
	}
	if len(e.Metrics) > MaxExperimentMetrics {
		p.add(path+".metrics", "has %d metrics, at most %d are allowed", len(e.Metrics), MaxExperimentMetrics)
	}
	var raws []map[string]json.RawMessage
	_ = json.Unmarshal(b, &raws)
	seen := map[string]bool{}
	for i, m := range e.Metrics {
		mp := fmt.Sprintf("%s.metrics[%d]", path, i)
		if i < len(raws) {
			if u := unknownFields(raws[i], metricFields); len(u) > 0 {
				p.add(mp, "unknown field(s) %s (allowed: %s)", strings.Join(u, ", "), strings.Join(metricFields, ", "))
			}
		}
		switch {
		case !metricKeyPattern.MatchString(m.Key):
			p.add(mp+".key", "must be 1-128 characters of letters, digits and _ . : -, got %q", m.Key)
		case seen[m.Key]:
			p.add(mp+".key", "%q is listed twice", m.Key)
		}
		seen[m.Key] = true
		if m.Better != "" && m.Better != BetterHigher && m.Better != BetterLower {
			p.add(mp+".better", "%q is not allowed (allowed: higher, lower)", m.Better)
		}
	}
	return e
}

// ExpectedSplit is the share each variant should get, summing to 1, over
// the flag's variants (sorted by name).
func (e *Experiment) ExpectedSplit(variants []string) map[string]float64 {
	out := make(map[string]float64, len(variants))
	total := 0.0
	for _, v := range variants {
		w := 1.0
		if e.Split != nil {
			w = e.Split[v]
		}
		out[v] = w
		total += w
	}
	if total > 0 {
		for v := range out {
			out[v] /= total
		}
	}
	return out
}

// Metric returns the metric with key, if the experiment has it.
func (e *Experiment) Metric(key string) (ExperimentMetric, bool) {
	for _, m := range e.Metrics {
		if m.Key == key {
			return m, true
		}
	}
	return ExperimentMetric{}, false
}

// metricKeys is what a sidecar needs to know of the experiment: the event
// keys to join to exposures. nil for a flag without an experiment.
func (e *Experiment) metricKeys() []string {
	if e == nil {
		return nil
	}
	keys := make([]string, len(e.Metrics))
	for i, m := range e.Metrics {
		keys[i] = m.Key
	}
	return keys
}
