package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/pennon-dev/pennon/evaluator"
)

// Compile builds the evaluator snapshot for this document at version.
//
// It does the least work the document allows, and the result is the same
// either way (TestIncrementalMatchesFullRebuild): a document that was
// already compiled (Parse compiles every flag to validate it) is served
// again at the new version; a document made by Apply from a compiled
// document compiles only the flags the changeset put and relinks their
// dependents (evaluator.Snapshot.Update), sharing every other compiled flag;
// anything else compiles every flag.
func (d *Document) Compile(version uint64) (*evaluator.Snapshot, error) {
	if s := d.compiled.Load(); s != nil {
		return s.At(version), nil
	}
	if dl := d.delta.Load(); dl != nil {
		specs, problems := d.specs(dl.put)
		if len(problems) > 0 {
			return nil, &ValidationError{Problems: problems}
		}
		s, ps := dl.base.Update(version, specs, dl.del)
		if ps != nil {
			return nil, &ValidationError{Problems: ps}
		}
		d.keep(s)
		return s, nil
	}
	specs, problems := d.specs(d.keys)
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	s, ps := evaluator.NewSnapshot(version, specs, evaluator.SnapshotOptions{})
	if ps != nil {
		return nil, &ValidationError{Problems: ps}
	}
	d.keep(s)
	return s, nil
}

// keep remembers s as this document's compiled snapshot and lets go of the
// base snapshot the delta pointed to, so a chain of applied documents never
// holds more than one snapshot besides its own.
func (d *Document) keep(s *evaluator.Snapshot) {
	d.compiled.CompareAndSwap(nil, s)
	d.delta.Store(nil)
}

// specs converts the named flags into evaluator input, resolving $ref.
func (d *Document) specs(keys []string) ([]evaluator.FlagSpec, []evaluator.Problem) {
	var problems []evaluator.Problem
	evs := d.decodedEvaluators()
	specs := make([]evaluator.FlagSpec, 0, len(keys))
	for _, key := range keys {
		sp, ps := d.spec(key, d.Flag(key), evs)
		problems = append(problems, ps...)
		specs = append(specs, sp)
	}
	return specs, problems
}

// decodedEvaluators decodes $evaluators for resolveRefs (read-only).
func (d *Document) decodedEvaluators() map[string]any {
	evs := make(map[string]any, len(d.evaluators))
	for name, raw := range d.evaluators {
		var v any
		_ = decodeJSON(raw, &v)
		evs[name] = v
	}
	return evs
}

// spec converts flag f (key) into evaluator input, resolving $ref against
// evs (decodedEvaluators). It reads d's metadata and evaluators only, so
// Parse calls it from several goroutines.
func (d *Document) spec(key string, f *FlagDoc, evs map[string]any) (evaluator.FlagSpec, []evaluator.Problem) {
	var problems []evaluator.Problem
	sp := evaluator.FlagSpec{Key: key, Disabled: f.State == "DISABLED", Prerequisites: f.Prerequisites, SafeVariant: f.SafeVariant,
		Experiment: f.Experiment.metricKeys()}
	sp.Variants = make([]evaluator.VariantSpec, 0, len(f.Variants))
	for _, n := range keysOf(f.Variants) {
		v, ok := f.decoded.variants[n]
		if !ok {
			_ = decodeJSON(f.Variants[n], &v)
		}
		sp.Variants = append(sp.Variants, evaluator.VariantSpec{Name: n, Value: v})
	}
	if f.DefaultVariant != nil {
		sp.DefaultVariant, sp.HasDefaultVariant = *f.DefaultVariant, true
	}
	if len(f.Targeting) > 0 {
		t := f.decoded.targeting
		if t == nil {
			_ = decodeJSON(f.Targeting, &t)
		}
		sp.Targeting = t
		// Only rules that mention $ref need the substituting copy.
		if bytes.Contains(f.Targeting, []byte(`"$ref"`)) {
			resolved, ps := resolveRefs(t, evs, "flags."+key+".targeting", nil)
			problems = append(problems, ps...)
			sp.Targeting = resolved
		}
	}
	if len(f.FallbackTargeting) > 0 {
		t := f.decoded.fallback
		if t == nil {
			_ = decodeJSON(f.FallbackTargeting, &t)
		}
		sp.FallbackTargeting, sp.HasFallback = t, true
		if bytes.Contains(f.FallbackTargeting, []byte(`"$ref"`)) {
			resolved, ps := resolveRefs(t, evs, "flags."+key+".fallbackTargeting", nil)
			problems = append(problems, ps...)
			sp.FallbackTargeting = resolved
		}
		if f.TargetingBudget != "" {
			sp.TargetingBudget, _ = parseBudget(f.TargetingBudget) // validated by Parse
		}
	}
	if len(d.metadata) == 0 && len(f.Metadata) > 0 {
		sp.Metadata = f.Metadata // both read-only: one map, not a copy per flag
	} else if len(d.metadata) > 0 || len(f.Metadata) > 0 {
		sp.Metadata = make(map[string]any, len(d.metadata)+len(f.Metadata))
		for k, v := range d.metadata {
			sp.Metadata[k] = v
		}
		for k, v := range f.Metadata {
			sp.Metadata[k] = v
		}
	}
	switch f.Propagation {
	case PropagationAlwaysFresh:
		sp.Propagation = evaluator.AlwaysFresh
	case PropagationBackgroundRefresh:
		sp.Propagation = evaluator.BackgroundRefresh
	}
	if f.FailMode == FailModeClosed {
		sp.FailMode = evaluator.FailClosed
	}
	if f.Expires != "" { // most flags have none: skip two failed time.Parse calls
		if exp, ok := f.ExpiresAt(); ok {
			sp.Expires = exp
		}
	}
	return sp, problems
}

// resolveRefs substitutes {"$ref": "name"} with $evaluators[name],
// recursively, rejecting unknown names and reference cycles.
func resolveRefs(v any, evs map[string]any, path string, stack []string) (any, []evaluator.Problem) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"]; ok && len(x) == 1 {
			name, _ := ref.(string)
			rule, ok := evs[name]
			if !ok {
				return nil, []evaluator.Problem{{Path: "$evaluators." + name, Reason: "referenced but not defined (at " + path + ")"}}
			}
			if contains(stack, name) {
				return nil, []evaluator.Problem{{Path: "$evaluators." + name, Reason: "reference cycle " + strings.Join(append(stack, name), " → ")}}
			}
			return resolveRefs(rule, evs, "$evaluators."+name, append(stack, name))
		}
		out := make(map[string]any, len(x))
		var problems []evaluator.Problem
		for k, e := range x {
			r, ps := resolveRefs(e, evs, path+"."+k, stack)
			out[k] = r
			problems = append(problems, ps...)
		}
		return out, problems
	case []any:
		out := make([]any, len(x))
		var problems []evaluator.Problem
		for i, e := range x {
			r, ps := resolveRefs(e, evs, fmt.Sprintf("%s[%d]", path, i), stack)
			out[i] = r
			problems = append(problems, ps...)
		}
		return out, problems
	}
	return v, nil
}
