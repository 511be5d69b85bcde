package flagdgrpc

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
)

// prereqDocs are prerequisite shapes the inliner must compile exactly:
// boolean-returning rules (variants named "true"/"false"), a rule whose null
// means the default variant, chains, a disabled prerequisite, a static one
// that fails, a prerequisite that reads $flagd.flagKey or buckets on the
// flag key, a $ref inside the prerequisite, and several prerequisites.
var prereqDocs = map[string]string{
	"boolean rule": `{"flags": {
	  "beta": {"state": "ENABLED", "variants": {"true": true, "false": false}, "defaultVariant": "false",
	    "targeting": {"==": [{"var": "plan"}, "pro"]}},
	  "f": {"state": "ENABLED", "variants": {"on": "on", "off": "off"}, "defaultVariant": "off", "targeting": T, "prerequisites": {"beta": "true"}},
	  "g": {"state": "ENABLED", "variants": {"on": 1, "off": 0}, "defaultVariant": "off", "targeting": T, "prerequisites": {"beta": "false"}}}}`,
	"null means default": `{"flags": {
	  "p": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
	    "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "b", null]}},
	  "f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"p": "a"}},
	  "nodef": {"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": T, "prerequisites": {"p": "b"}}}}`,
	"chain, disabled and static": `{"flags": {
	  "root": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	    "targeting": {"if": [{">=": [{"var": "age"}, 18]}, "on", "off"]}},
	  "mid": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
	    "targeting": {"if": [{"in": [{"var": "country"}, ["SE", "NO"]]}, "on", "off"]}, "prerequisites": {"root": "on"}},
	  "leaf": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	    "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}, "prerequisites": {"mid": "on"}},
	  "midoff": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"mid": "off"}},
	  "gone": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
	  "needsgone": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"gone": "on"}},
	  "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
	  "needsstatic": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"static": "off"}},
	  "two": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"root": "on", "leaf": "off"}}}}`,
	"flag key and bucketing": `{"$evaluators": {"pro": {"==": [{"var": "plan"}, "pro"]}},
	  "flags": {
	  "split": {"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c"}, "defaultVariant": "a",
	    "targeting": {"if": [{"$ref": "pro"}, "c", {"fractional": [["a", 34], ["b", 33], ["c", 33]]}]}},
	  "named": {"state": "ENABLED", "variants": {"named-x": "x", "other": "y"}, "defaultVariant": "other",
	    "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "user-1"]}, {"cat": [{"var": "$flagd.flagKey"}, "-x"]},
	      {"starts_with": [{"var": "targetingKey"}, "user-2"]}, "no-such-variant", "other"]}},
	  "explicit": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
	    "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 50], ["b", 50]]}},
	  "f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"split": "b"}},
	  "g": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"named": "named-x"}},
	  "g2": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"named": "other"}},
	  "h": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": T, "prerequisites": {"explicit": "b"}}}}`,
}

// dependentRule is every dependent flag's own rule: "on" for any caller
// with a targeting key, so its answer shows whether its prerequisites held.
const dependentRule = `{"if": [{"!=": [{"var": "targetingKey"}, null]}, "on", "off"]}`

func prereqContexts() []map[string]any {
	var out []map[string]any
	plans := []string{"pro", "free"}
	countries := []string{"SE", "DE"}
	for i := range 40 {
		out = append(out, map[string]any{"targetingKey": fmt.Sprintf("user-%d", i), "email": fmt.Sprintf("u%d@x.io", i),
			"plan": plans[i%2], "country": countries[(i/2)%2], "age": float64(10 + i)})
	}
	return out
}

// TestPrerequisiteInlining: for every shape above, the synced set evaluated
// in-process gives the sidecar's variant and value for every flag and
// context, and the contexts reach both outcomes of each prerequisite.
func TestPrerequisiteInlining(t *testing.T) {
	for name, js := range prereqDocs {
		t.Run(name, func(t *testing.T) {
			doc, err := config.Parse([]byte(strings.ReplaceAll(js, `"targeting": T`, `"targeting": `+dependentRule)))
			if err != nil {
				t.Fatal(err)
			}
			sidecar, err := doc.Compile(1)
			if err != nil {
				t.Fatal(err)
			}
			fs, err := buildFlagSet(doc)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(fs.json), "prerequisites") {
				t.Fatalf("prerequisites reached the synced set: %s", fs.json)
			}
			synced, err := config.Parse(fs.json)
			if err != nil {
				t.Fatalf("synced: %v\n%s", err, fs.json)
			}
			inproc, err := synced.Compile(1)
			if err != nil {
				t.Fatalf("synced: %v\n%s", err, fs.json)
			}
			outcomes := map[string]map[string]bool{}
			for _, key := range sidecar.Keys() {
				outcomes[key] = map[string]bool{}
				for i, m := range prereqContexts() {
					want := sidecar.Evaluate(key, evaluator.ContextFromMap(m))
					got := inproc.Evaluate(key, evaluator.ContextFromMap(m))
					outcomes[key][want.Variant] = true
					if got.Variant != want.Variant || string(got.ValueJSON) != string(want.ValueJSON) || got.HasValue != want.HasValue || got.ErrorCode != want.ErrorCode {
						t.Errorf("%s ctx%d %v: in-process %q=%s %s, sidecar %q=%s %s\nsynced rule: %s", key, i, m,
							got.Variant, got.ValueJSON, got.Reason, want.Variant, want.ValueJSON, want.Reason, fs.flags[key])
					}
				}
			}
			for _, key := range sidecar.Keys() {
				if sidecar.Flag(key) != nil && len(outcomes[key]) < 2 && dependent(doc, key) {
					t.Errorf("%s: the contexts reach only %v; both outcomes of its prerequisites must be tested", key, outcomes[key])
				}
			}
		})
	}
}

func dependent(doc *config.Document, key string) bool {
	f := doc.Flag(key)
	if f == nil || len(f.Prerequisites) == 0 {
		return false
	}
	// A disabled prerequisite never holds and one without targeting always
	// answers the same: one outcome each.
	for p := range f.Prerequisites {
		if pf := doc.Flag(p); pf != nil && (!pf.Enabled() || len(pf.Targeting) == 0) {
			return false
		}
	}
	return true
}
