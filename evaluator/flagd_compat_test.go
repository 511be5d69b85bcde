package evaluator

import (
	"strconv"
	"strings"
	"testing"
)

// TestFlagdEdgeCases pins the answers flagd gives in the edge cases issue 12
// lists. Each case names the flagd source that decides it:
//
//   - fractional.go: flagd core/pkg/evaluator/fractional.go (v2 bucketing)
//   - json.go: flagd core/pkg/evaluator/json.go (evaluateVariant)
//   - jsonlogic: github.com/diegoholiveira/jsonlogic/v3, the JSON Logic
//     library flagd evaluates with (math.go, comp.go, typing, javascript)
//   - testbed: flagd-testbed v3.9.0 evaluator scenarios (config/testdata)
//
// The flags use rule() (variants red, blue, green, "true", "false", "1";
// default variant blue) unless the case gives a whole flag.
func TestFlagdEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		flagd   string // what flagd does, and where
		rule    string
		ctx     string
		variant string // "" when the answer is the code default
		reason  Reason
		code    ErrorCode
	}{
		// --- fractional: the bucketing value -----------------------------
		{"fractional bucketing value missing falls back to targetingKey",
			"fractional.go: a nil first element is dropped and flagKey+targetingKey is hashed (flagd test 'parser should ignore nil/missing custom variables')",
			`{"fractional": [{"var": "email"}, ["red", 50], ["green", 50]]}`, `{"targetingKey": "user-1"}`,
			shorthandAnswer(t, `user-1`), ReasonTargetingMatch, ""},
		{"fractional bucketing value missing and no targetingKey is the default",
			"fractional.go: 'bucketing value not supplied and no targetingKey in context' → null; testbed fractional-null-bucket-key-flag",
			`{"fractional": [{"var": "email"}, ["red", 50], ["green", 50]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional bucketing value empty string is hashed as is",
			"fractional.go: any string is the bucketing value; murmur3(\"\") = 0 falls in the first bucket",
			`{"fractional": [{"var": "email"}, ["red", 50], ["green", 50]]}`, `{"email": "", "targetingKey": "user-1"}`,
			"red", ReasonTargetingMatch, ""},
		{"fractional bucketing value number is not a bucketing value",
			"fractional.go: a non-string, non-null first element stays in the bucket list, which then fails to parse → null",
			`{"fractional": [{"var": "n"}, ["red", 50], ["green", 50]]}`, `{"n": 42, "targetingKey": "user-1"}`, "blue", ReasonDefault, ""},
		{"fractional bucketing value boolean is not a bucketing value",
			"fractional.go: as for a number → null",
			`{"fractional": [{"var": "b"}, ["red", 50], ["green", 50]]}`, `{"b": true, "targetingKey": "user-1"}`, "blue", ReasonDefault, ""},
		{"fractional bucketing value object is not a bucketing value",
			"fractional.go: as for a number → null",
			`{"fractional": [{"var": "o"}, ["red", 50], ["green", 50]]}`, `{"o": {"a": 1}, "targetingKey": "user-1"}`, "blue", ReasonDefault, ""},

		{"fractional bucketing value built with cat is trimmed",
			"jsonlogic strings.go: concat returns strings.TrimSpace of the joined values, so \" user-1 \" buckets as \"user-1\"",
			`{"fractional": [{"cat": [{"var": "email"}]}, ["red", 50], ["green", 50]]}`, `{"email": "  f-user-1  "}`,
			bucketOf("f-user-1", []string{"red", "green"}, []uint64{50, 50}), ReasonTargetingMatch, ""},
		{"fractional bucketing value built with cat of a boolean is a parse error",
			"jsonlogic: concat → typing.ToString(bool) panics → PARSE_ERROR",
			`{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "b"}]}, ["red", 50], ["green", 50]]}`, `{"b": true}`,
			"", ReasonError, CodeParseError},
		{"cat writes numbers without an exponent",
			"jsonlogic: typing.ToString uses strconv.FormatFloat(f, 'f', -1, 64)",
			`{"if": [{"==": [{"cat": [{"var": "n"}]}, "1000000000000000000000"]}, "red", "green"]}`, `{"n": 1e21}`, "red", ReasonTargetingMatch, ""},

		// --- fractional: the targeting key ---------------------------------
		{"fractional without targetingKey is the default",
			"fractional.go: shorthand needs a string targetingKey → null",
			`{"fractional": [["red", 50], ["green", 50]]}`, `{"email": "a@b.c"}`, "blue", ReasonDefault, ""},
		{"fractional with a numeric targetingKey is the default",
			"fractional.go: dataMap[targetingKey].(string) fails → null",
			`{"fractional": [["red", 50], ["green", 50]]}`, `{"targetingKey": 7}`, "blue", ReasonDefault, ""},
		{"fractional with an empty targetingKey hashes the flag key alone",
			"fractional.go: \"\" is a string; flagKey+\"\" is hashed",
			`{"fractional": [["red", 50], ["green", 50]]}`, `{"targetingKey": ""}`,
			bucketOf("f", []string{"red", "green"}, []uint64{50, 50}), ReasonTargetingMatch, ""},

		// --- fractional: variant names ------------------------------------
		{"fractional boolean variant selects the variant named true",
			"fractional.go: bool variants are returned as is; json.go reads the JSON 'true' as variant \"true\"; testbed fractional-as-condition-flag",
			`{"fractional": ["user-1", [true, 1], [false, 0]]}`, `{}`, "true", ReasonTargetingMatch, ""},
		{"fractional boolean variant in a flag without a true variant is an error",
			"json.go: 'invalid or missing variant' → GENERAL",
			`{"state": "ENABLED", "variants": {"on": "on", "off": "off"}, "defaultVariant": "off", "targeting": {"fractional": ["user-1", [true, 1]]}}`,
			`{}`, "", ReasonError, CodeGeneral},
		{"fractional number variant selects the variant named 1",
			"fractional.go: float64 variants are returned as is; json.go reads JSON 1 as \"1\"",
			`{"fractional": ["user-1", [1, 1]]}`, `{}`, "1", ReasonTargetingMatch, ""},
		{"fractional null variant is the default",
			"fractional.go: nil variants are allowed; json.go: null → default variant",
			`{"fractional": ["user-1", [null, 1]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional variant computed to an object fails the whole fractional",
			"fractional.go: every variant must be a string, bool, number or nil, checked before choosing → null",
			`{"fractional": ["user-1", ["red", 1], [{"var": "o"}, 0]]}`, `{"o": {"a": 1}}`, "blue", ReasonDefault, ""},

		// --- fractional: weights ------------------------------------------
		{"fractional computed null weight counts as 1",
			"fractional.go: a nil weight keeps the default weight 1",
			`{"fractional": ["user-1", ["red", {"var": "w"}], ["green", 0]]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"fractional computed string weight fails",
			"fractional.go: 'weight must be a number' → null",
			`{"fractional": ["user-1", ["red", {"var": "w"}], ["green", 1]]}`, `{"w": "50"}`, "blue", ReasonDefault, ""},
		{"fractional computed boolean weight fails",
			"fractional.go: 'weight must be a number' → null",
			`{"fractional": ["user-1", ["red", {"var": "w"}], ["green", 1]]}`, `{"w": true}`, "blue", ReasonDefault, ""},
		{"fractional fractional weight fails",
			"fractional.go: 'weights must be integers' → null",
			`{"fractional": ["user-1", ["red", 12.5], ["green", 1]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional computed fractional weight fails",
			"fractional.go: 'weights must be integers' → null",
			`{"fractional": ["user-1", ["red", {"var": "w"}], ["green", 1]]}`, `{"w": 0.5}`, "blue", ReasonDefault, ""},
		{"fractional weight above 2^31-1 fails",
			"fractional.go: 'exceeds maximum allowed value' → null",
			`{"fractional": ["user-1", ["red", 2147483648], ["green", 1]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional weight sum above 2^31-1 fails",
			"fractional.go: 'sum of all weights exceeds maximum allowed value' → null",
			`{"fractional": ["user-1", ["red", 2147483647], ["green", 1]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional negative weight counts as 0",
			"fractional.go: negative weights are clamped to 0; testbed fractional-negative-weight-flag",
			`{"fractional": ["user-1", ["red", -50], ["green", 100]]}`, `{}`, "green", ReasonTargetingMatch, ""},
		{"fractional computed negative weight counts as 0",
			"fractional.go: clamped after evaluation",
			`{"fractional": ["user-1", ["red", {"var": "w"}], ["green", 1]]}`, `{"w": -5}`, "green", ReasonTargetingMatch, ""},
		{"fractional computed -Infinity weight fails",
			"fractional.go: -Inf is not a whole number (w != float64(int64(w))) → null",
			`{"fractional": ["user-1", ["red", {"-": [{"/": [1, 0]}]}], ["green", 1]]}`, `{}`, "blue", ReasonDefault, ""},
		{"fractional all weights zero is the default",
			"fractional.go: total weight 0 → null; testbed fractional-zero-weights-flag",
			`{"fractional": ["user-1", ["red", 0], ["green", 0]]}`, `{}`, "blue", ReasonDefault, ""},

		// --- arithmetic on null and friends -------------------------------
		{"plus with null aborts the evaluation",
			"jsonlogic math.go: typing.ToNumber(nil) panics; the library recovers it as an error; json.go answers PARSE_ERROR",
			`{"if": [{">": [{"+": [{"var": "n"}, 1]}, 5]}, "red", "green"]}`, `{}`, "", ReasonError, CodeParseError},
		{"plus with numbers is fine",
			"jsonlogic math.go: sum",
			`{"if": [{">": [{"+": [{"var": "n"}, 1]}, 5]}, "red", "green"]}`, `{"n": 5}`, "red", ReasonTargetingMatch, ""},
		{"minus of null aborts",
			"jsonlogic: unary - → typing.ToNumber(nil) panics → PARSE_ERROR",
			`{"if": [{"<": [{"-": [{"var": "n"}]}, 0]}, "red", "green"]}`, `{}`, "", ReasonError, CodeParseError},
		{"times with a boolean aborts",
			"jsonlogic: typing.ToNumber(bool) panics → PARSE_ERROR",
			`{"if": [{"==": [{"*": [{"var": "b"}, 2]}, 2]}, "red", "green"]}`, `{"b": true}`, "", ReasonError, CodeParseError},
		{"modulo of null aborts",
			"jsonlogic: mod → typing.ToNumber(nil) panics → PARSE_ERROR",
			`{"if": [{"==": [{"%": [{"var": "n"}, 2]}, 0]}, "red", "green"]}`, `{}`, "", ReasonError, CodeParseError},
		{"division with an array aborts",
			"jsonlogic: typing.ToNumber([]any) panics → PARSE_ERROR",
			`{"if": [{"==": [{"/": [{"var": "xs"}, 2]}, 1]}, "red", "green"]}`, `{"xs": [2]}`, "", ReasonError, CodeParseError},
		{"unary plus on null written without an array is null, not an error",
			"jsonlogic operation.go: {\"+\": {...}} evaluates to nil, and a nil argument returns nil before any conversion",
			`{"if": [{"==": [{"+": {"var": "n"}}, null]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"unary minus written without an array negates",
			"jsonlogic: a primitive argument goes to unary(\"-\"), -1 × number",
			`{"if": [{"==": [{"-": {"var": "n"}}, -3]}, "red", "green"]}`, `{"n": 3}`, "red", ReasonTargetingMatch, ""},
		{"arithmetic on a non-numeric string counts it as 0",
			"jsonlogic: typing.ToNumber ignores strconv.ParseFloat's error → 0 (JavaScript would give NaN)",
			`{"if": [{"==": [{"+": ["abc", 1]}, 1]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"arithmetic on null in the branch not taken still aborts",
			"jsonlogic operation.go: every argument of if is evaluated (parseValues) before choosing",
			`{"if": [true, "red", {"+": [{"var": "n"}, 1]}]}`, `{}`, "", ReasonError, CodeParseError},
		{"arithmetic on null in a var default aborts even when the attribute is present",
			"jsonlogic operation.go: var's arguments are evaluated (parseValues) before the lookup",
			`{"var": ["c", {"+": [{"var": "n"}, 1]}]}`, `{"c": "red"}`, "", ReasonError, CodeParseError},
		{"arithmetic on null under a short-circuited or is never evaluated",
			"jsonlogic: and/or are lazy (getValuesWithoutParsing)",
			`{"if": [{"or": [true, {"+": [{"var": "n"}, 1]}]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"targeting returning Infinity is a parse error",
			"json.go: the result is JSON-encoded to read the variant; +Inf cannot be encoded → PARSE_ERROR",
			`{"/": [1, 0]}`, `{}`, "", ReasonError, CodeParseError},
		{"targeting returning NaN is a parse error",
			"json.go: NaN cannot be JSON-encoded → PARSE_ERROR",
			`{"%": [1, 0]}`, `{}`, "", ReasonError, CodeParseError},

		// --- comparisons, equality and truthiness with null ----------------
		{"missing attribute is not >= 0",
			"jsonlogic: >= is less(b, a) || equals(a, b), and equals(nil, 0) is false",
			`{"if": [{">=": [{"var": "n"}, 0]}, "red", "green"]}`, `{}`, "green", ReasonTargetingMatch, ""},
		{"null <= null",
			"jsonlogic: equals(nil, nil) is true",
			`{"if": [{"<=": [null, null]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"missing attribute < 1 compares as 0",
			"jsonlogic comp.go: less uses javascript.ToNumber, null → 0",
			`{"if": [{"<": [{"var": "n"}, 1]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
		{"empty array is not == 0",
			"jsonlogic: equals compares javascript.ToNumber([]) = NaN",
			`{"if": [{"==": [[], 0]}, "red", "green"]}`, `{}`, "green", ReasonTargetingMatch, ""},
		{"empty object is falsy",
			"jsonlogic typing.IsTrue: maps are true only when non-empty",
			`{"if": [{"var": "o"}, "red", "green"]}`, `{"o": {}}`, "green", ReasonTargetingMatch, ""},
		{"NaN is truthy",
			"jsonlogic typing.IsTrue: a number is true when != 0, which NaN is",
			`{"if": [{"/": [0, 0]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := rule(tt.rule)
			if strings.HasPrefix(tt.rule, `{"state"`) {
				def = tt.rule // a whole flag, for cases that need other variants
			}
			s := snap(t, map[string]string{"f": def})
			r := s.Evaluate("f", ctxOf(t, tt.ctx))
			if r.Variant != tt.variant || r.Reason != tt.reason || r.ErrorCode != tt.code {
				t.Fatalf("got variant %q reason %s code %q (%s), want %q %s %q\nflagd: %s",
					r.Variant, r.Reason, r.ErrorCode, r.ErrorDetails, tt.variant, tt.reason, tt.code, tt.flagd)
			}
			if r.HasValue != (tt.variant != "") {
				t.Fatalf("HasValue = %v for variant %q", r.HasValue, tt.variant)
			}
			if tt.code != "" && !strings.Contains(r.ErrorDetails, "flag f") {
				t.Errorf("error details %q do not name the flag", r.ErrorDetails)
			}
		})
	}
}

// bucketOf is flagd's v2 bucketing written out independently of the
// evaluator's: murmur3(flagKey+targetingKey) × total >> 32, buckets in order.
func bucketOf(seed string, names []string, weights []uint64) string {
	var total uint64
	for _, w := range weights {
		total += w
	}
	point := uint64(murmur3(seed, "")) * total >> 32
	var end uint64
	for i, w := range weights {
		if end += w; point < end {
			return names[i]
		}
	}
	return ""
}

// shorthandAnswer is what the shorthand fractional (no bucketing value)
// answers for tk in flag "f": flagKey + targetingKey hashed.
func shorthandAnswer(t *testing.T, tk string) string {
	t.Helper()
	return bucketOf("f"+tk, []string{"red", "green"}, []uint64{50, 50})
}

// TestFractionalManyBucketsComputedWeight is the regression test for the nil
// closure past the 16th bucket: a computed weight in a fractional with more
// than 16 buckets dereferenced the (nil) weight expression of constant
// buckets after the 16th and the request answered 500. It must answer
// exactly what the same split with constant weights answers.
func TestFractionalManyBucketsComputedWeight(t *testing.T) {
	const n = 20
	var dyn, constant strings.Builder
	variants := `"variants": {`
	for i := range n {
		sep := ","
		if i == n-1 {
			sep = ""
		}
		name := "v" + strconv.Itoa(i)
		variants += `"` + name + `": "` + name + `"` + sep
		w := strconv.Itoa(i%3 + 1)
		if i == 0 {
			dyn.WriteString(`["v0", {"+": [0, 1]}],`) // computed weight 1
		} else {
			dyn.WriteString(`["` + name + `", ` + w + `]` + sep)
		}
		if i == 0 {
			constant.WriteString(`["v0", 1],`)
		} else {
			constant.WriteString(`["` + name + `", ` + w + `]` + sep)
		}
	}
	variants += `}, "defaultVariant": "v0"`
	s := snap(t, map[string]string{
		"dyn":   `{"state": "ENABLED", ` + variants + `, "targeting": {"fractional": [{"var": "targetingKey"}, ` + dyn.String() + `]}}`,
		"const": `{"state": "ENABLED", ` + variants + `, "targeting": {"fractional": [{"var": "targetingKey"}, ` + constant.String() + `]}}`,
	})
	seen := map[string]bool{}
	for i := range 2000 {
		ctx := ContextFromMap(map[string]any{"targetingKey": "user-" + strconv.Itoa(i)})
		d, c := s.Evaluate("dyn", ctx), s.Evaluate("const", ctx)
		if d.Variant != c.Variant || d.Reason != ReasonTargetingMatch {
			t.Fatalf("user-%d: computed-weight split answered %q (%s %s), constant split %q", i, d.Variant, d.Reason, d.ErrorDetails, c.Variant)
		}
		seen[d.Variant] = true
	}
	for i := 16; i < n; i++ {
		if !seen["v"+strconv.Itoa(i)] {
			t.Errorf("no user landed in bucket v%d past the 16th: the walk past 16 buckets is untested", i)
		}
	}
}

// TestComputedVarInsideIteration is the regression test for a computed var
// path inside some/all/none/map/filter: it read the root context instead of
// the current element (and so two contexts with equal cache keys could get
// different answers).
func TestComputedVarInsideIteration(t *testing.T) {
	name := `{"var": {"cat": ["na", "me"]}}` // computes the path "name"
	tests := []struct {
		name, rule, ctx, variant string
	}{
		{"some reads the element", `{"if": [{"some": [{"var": "items"}, {"==": [` + name + `, "x"]}]}, "red", "green"]}`,
			`{"name": "y", "items": [{"name": "x"}]}`, "red"},
		{"some ignores the root", `{"if": [{"some": [{"var": "items"}, {"==": [` + name + `, "x"]}]}, "red", "green"]}`,
			`{"name": "x", "items": [{"name": "z"}]}`, "green"},
		{"all reads the element", `{"if": [{"all": [{"var": "items"}, {"==": [` + name + `, "x"]}]}, "red", "green"]}`,
			`{"name": "y", "items": [{"name": "x"}, {"name": "x"}]}`, "red"},
		{"none reads the element", `{"if": [{"none": [{"var": "items"}, {"==": [` + name + `, "x"]}]}, "red", "green"]}`,
			`{"name": "x", "items": [{"name": "z"}]}`, "red"},
		{"map reads the element", `{"if": [{"in": ["x", {"map": [{"var": "items"}, ` + name + `]}]}, "red", "green"]}`,
			`{"name": "y", "items": [{"name": "x"}]}`, "red"},
		{"filter reads the element", `{"if": [{"filter": [{"var": "items"}, {"==": [` + name + `, "x"]}]}, "red", "green"]}`,
			`{"name": "x", "items": [{"name": "z"}]}`, "green"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snap(t, map[string]string{"f": rule(tt.rule)})
			if r := s.Evaluate("f", ctxOf(t, tt.ctx)); r.Variant != tt.variant {
				t.Fatalf("variant %q (%s), want %q", r.Variant, r.ErrorDetails, tt.variant)
			}
		})
	}
	// The flag stays cacheable (the path reads the element, covered by
	// "items"), and contexts that differ only outside "items" share a key
	// and an answer.
	s := snap(t, map[string]string{"f": rule(tests[0].rule)})
	f := s.Flag("f")
	a, b := ctxOf(t, `{"name": "x", "items": [{"name": "z"}]}`), ctxOf(t, `{"name": "y", "items": [{"name": "z"}]}`)
	ka, oka := f.AppendCacheKey(nil, a)
	kb, okb := f.AppendCacheKey(nil, b)
	if !oka || !okb || string(ka) != string(kb) {
		t.Fatalf("cache keys %q (%v) and %q (%v) should be equal and usable", ka, oka, kb, okb)
	}
	if ra, rb := s.EvaluateFlag(f, a), s.EvaluateFlag(f, b); ra.Variant != rb.Variant {
		t.Fatalf("equal cache keys, different answers: %q and %q", ra.Variant, rb.Variant)
	}
}
