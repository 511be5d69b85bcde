package config

import (
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
)

// TestFallbackTargetingParse: fallbackTargeting is JSON Logic like
// targeting ($ref included, problems at its own JSON path) and
// targetingBudget a validated Go duration that needs a fallback.
func TestFallbackTargetingParse(t *testing.T) {
	const flag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",` +
		`"targeting":{"if":[{"in":[{"var":"email"},["a@x","b@x"]]},"on","off"]}`
	doc := func(extra string) string {
		return `{"$evaluators":{"premium":{"==":[{"var":"plan"},"premium"]}},"flags":{"f":` + flag + extra + `}}}`
	}
	bad := []struct {
		name, extra string
		want        []string
	}{
		{"unknown operator", `,"fallbackTargeting":{"if":[{"iff":[1]},"on","off"]}`, []string{`flags.f.fallbackTargeting.if[0]: unknown operator "iff"`}},
		{"not an object", `,"fallbackTargeting":"on"`, []string{`flags.f.fallbackTargeting: must be a JSON Logic rule object (use {} to serve the default variant), got string`}},
		{"null", `,"fallbackTargeting":null`, []string{`flags.f.fallbackTargeting: must be a JSON Logic rule object`}},
		{"undefined ref", `,"fallbackTargeting":{"if":[{"$ref":"gold"},"on","off"]}`, []string{`$evaluators.gold: referenced but not defined (at flags.f.fallbackTargeting`}},
		{"budget not a duration", `,"fallbackTargeting":{},"targetingBudget":"20"`, []string{`flags.f.targetingBudget: "20" is not a duration: write a Go duration such as "20us"`}},
		{"budget negative", `,"fallbackTargeting":{},"targetingBudget":"-5us"`, []string{`flags.f.targetingBudget: "-5us" must be positive`}},
		{"budget too large", `,"fallbackTargeting":{},"targetingBudget":"2s"`, []string{`flags.f.targetingBudget: "2s" is above the maximum 1s`}},
		{"budget not a string", `,"fallbackTargeting":{},"targetingBudget":20}`, []string{`flags.f.targetingBudget: must be a string`}},
		{"budget without fallback", `,"targetingBudget":"20us"`, []string{`flags.f.targetingBudget: needs fallbackTargeting`}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(doc(tc.extra)))
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(ve.Error(), w) {
					t.Errorf("missing %q in:\n%s", w, ve.Error())
				}
			}
		})
	}

	good := []struct {
		name, extra string
		budget      time.Duration
		fallbackOn  bool // the fallback answer for plan premium
	}{
		{"ref and budget", `,"fallbackTargeting":{"if":[{"$ref":"premium"},"on","off"]},"targetingBudget":"20us"`, 20 * time.Microsecond, true},
		{"empty fallback serves the default", `,"fallbackTargeting":{}`, 0, false},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse([]byte(doc(tc.extra)))
			if err != nil {
				t.Fatal(err)
			}
			s, err := d.Compile(1)
			if err != nil {
				t.Fatal(err)
			}
			f := s.Flag("f")
			if !f.HasFallback() || f.TargetingBudget() != tc.budget {
				t.Fatalf("HasFallback %v, budget %v; want true, %v", f.HasFallback(), f.TargetingBudget(), tc.budget)
			}
			ctx := evaluator.NewContext()
			if err := ctx.Decode([]byte(`{"plan":"premium","email":"z@x"}`), evaluator.Limits{}); err != nil {
				t.Fatal(err)
			}
			r := s.EvaluateFallback(f, ctx, evaluator.FallbackCost)
			if (r.Variant == "on") != tc.fallbackOn || r.Metadata["pennonTargeting"] != "fallback" {
				t.Fatalf("fallback answer %+v", r)
			}
			if full := s.EvaluateFlag(f, ctx); full.Variant != "off" || full.Metadata["pennonTargeting"] != nil {
				t.Fatalf("full answer %+v", full)
			}
			// The flag keeps both fields through its document form.
			if got := d.Flag("f"); len(got.FallbackTargeting) == 0 || (tc.budget != 0) != (got.TargetingBudget != "") {
				t.Fatalf("FlagDoc lost the fields: %+v", got)
			}
			// ... and through the canonical form (store, snapshots, export).
			again, err := Parse(d.Canonical())
			if err != nil {
				t.Fatal(err)
			}
			if again.Hash() != d.Hash() || !strings.Contains(string(d.Canonical()), `"fallbackTargeting":`) {
				t.Fatalf("canonical round trip lost fallbackTargeting: %s", d.Canonical())
			}
		})
	}
}
