package proxy

import (
	"github.com/pennon-dev/pennon/evaluator"
)

// ExperimentRecorder joins exposures to tracked events (the sidecar's
// experiment.Recorder). proxy only reports what it served and what the app
// tracked; the join and its bounds live there.
type ExperimentRecorder interface {
	// Expose: unitKey (the targeting key) was served variant of an
	// experiment flag with the given metric event keys.
	Expose(flagKey string, metrics []string, unitKey, variant string)
	// Track: the app tracked eventKey for unitKey, with a value if
	// hasValue. It reports whether any experiment counted it.
	Track(eventKey, unitKey string, value float64, hasValue bool) bool
}

// expose records an experiment flag's answer. Errors and answers without a
// variant (the caller's code default) are not exposures: the unit did not
// see any variant of the experiment.
func (s *Server) expose(f *evaluator.Flag, ec *evaluator.Context, r *evaluator.Result) {
	if r.ErrorCode != evaluator.CodeNone || r.Variant == "" {
		return
	}
	tk, _ := ec.TargetingKey()
	s.o.Experiments.Expose(f.Key(), f.ExperimentMetrics(), tk, r.Variant)
}

// exposeBulk records the exposures of a bulk evaluation: the unit saw every
// experiment flag of the flag set (listed in the plan). They are evaluated
// again here (only the experiment flags, each a few hundred nanoseconds)
// because the bulk answer may come whole from its cache.
func (s *Server) exposeBulk(plan *bulkPlan, ec *evaluator.Context) {
	for _, f := range plan.experiments {
		r := plan.snap.EvaluateFlag(f, ec)
		s.expose(f, ec, &r)
	}
}
