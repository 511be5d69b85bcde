package flagdgrpc

import (
	"testing"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	"github.com/pennon-dev/pennon/proxy"
)

// With the OFREP server's evaluation hooked in, a flag whose targeting is
// over its budget serves its fallbackTargeting over gRPC too, saying so in
// the metadata, exactly as the OFREP endpoint does.
func TestFallbackTargetingOverGRPC(t *testing.T) {
	const doc = `{"flags": {"tiered": {"state": "ENABLED", "variants": {"full": "full", "cheap": "cheap"}, "defaultVariant": "cheap",
	  "targeting": {"if": [{"in": ["x", {"var": "tags"}]}, "full", "full"]},
	  "fallbackTargeting": {"if": [true, "cheap", "cheap"]},
	  "targetingBudget": "1ns"}}}`
	h := newDocHolder(t, doc)
	ofrep, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: h, CacheBytes: -1, CostSampleEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{Source: h, EvaluateFlag: ofrep.EvaluateFlag})
	var last string
	var md map[string]any
	// Every other evaluation is timed (and, as the probe, answers with the
	// full rule); a flag is judged once its average holds 8 samples, and a
	// 1ns budget is exceeded by every one. The 41st is not a probe.
	for i := 0; i < 41; i++ {
		r, err := c.eval.ResolveString(callCtx(t), &evalv1.ResolveStringRequest{FlagKey: "tiered"})
		if err != nil {
			t.Fatal(err)
		}
		last, md = r.GetValue(), r.GetMetadata().AsMap()
	}
	if last != "cheap" || md["pennonTargeting"] != "fallback" || md["pennonFallbackReason"] != "cost" {
		t.Fatalf("after 41 evaluations over budget: value %q metadata %v; want the fallback rule's answer, marked", last, md)
	}
}
