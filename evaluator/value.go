package evaluator

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Values inside the evaluator are decoded JSON: nil, bool, float64, string,
// []any and map[string]any. These helpers give them JavaScript's semantics,
// because JSON Logic (and therefore flagd) is defined by json-logic-js.

// truthy is JSON Logic's truthiness as flagd's library computes it: false,
// 0, "", null, empty arrays and empty objects are false; NaN is true (its
// test is "not equal to 0").
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	default:
		return true
	}
}

// toNumber is JavaScript's Number(v).
func toNumber(v any) float64 {
	switch x := v.(type) {
	case nil:
		return 0
	case bool:
		if x {
			return 1
		}
		return 0
	case float64:
		return x
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return 0
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	case []any:
		switch len(x) {
		case 0:
			return 0
		case 1:
			return toNumber(x[0])
		}
		return math.NaN()
	default:
		return math.NaN()
	}
}

// toString is JavaScript's String(v) for JSON values.
func toString(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		if x {
			return "true"
		}
		return "false"
	case float64:
		return formatNumber(x)
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			if e != nil {
				parts[i] = toString(e)
			}
		}
		return strings.Join(parts, ",")
	default:
		return "[object Object]"
	}
}

// formatNumber prints a float the way JavaScript does for the common cases:
// integers without a fraction, others in shortest round-trip form.
func formatNumber(f float64) string {
	if math.IsNaN(f) {
		return "NaN"
	}
	if math.IsInf(f, 1) {
		return "Infinity"
	}
	if math.IsInf(f, -1) {
		return "-Infinity"
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// looseEqual is == as flagd's JSON Logic library defines it: null equals
// only null, two strings compare as strings, anything else compares as
// numbers (cmpNumber), so arrays and objects are never equal to anything.
func looseEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa == sb
		}
	}
	return cmpNumber(a) == cmpNumber(b)
}

// cmpNumber converts a comparison operand as flagd's JSON Logic library
// does (its javascript.ToNumber): null is 0, booleans 0/1, a blank string 0,
// other strings parsed as they are (no trimming; out of range is NaN), and
// arrays and objects NaN.
func cmpNumber(v any) float64 {
	switch x := v.(type) {
	case nil:
		return 0
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
		return 0
	case string:
		if strings.TrimSpace(x) == "" {
			return 0
		}
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	}
	return math.NaN()
}

// strictEqual is JavaScript's === (objects and arrays are never equal, as
// they could only be the same reference).
func strictEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	}
	return false
}

// less reports a < b as flagd's JSON Logic library does: two strings
// compare as strings, otherwise both sides become numbers (cmpNumber).
func less(a, b any) bool {
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa < sb
		}
	}
	return cmpNumber(a) < cmpNumber(b)
}

// lessEq reports a <= b as flagd's library does: less or looseEqual. So null
// is <= only null ({"<=": [null, 0]} is false), unlike JavaScript.
func lessEq(a, b any) bool {
	return less(a, b) || looseEqual(a, b)
}

// normalize turns decoded JSON with json.Number (or Go ints) into the
// evaluator's value types.
// normalizeRule is normalize for a rule being compiled: it copies only
// the objects and arrays that contain something to convert and shares the
// rest, since the rule is not modified afterwards (FlagSpec.Targeting).
// Most rules hold no number, and copying each of them whole was a quarter
// of compiling's allocations at 100,000 flags.
func normalizeRule(v any) any {
	n, _ := normalizeShared(v)
	return n
}

// normalizeShared is normalizeRule; changed reports whether the result is
// a new value.
func normalizeShared(v any) (out any, changed bool) {
	switch x := v.(type) {
	case []any:
		var cp []any
		for i, e := range x {
			n, ch := normalizeShared(e)
			if ch && cp == nil {
				cp = make([]any, len(x))
				copy(cp, x[:i])
			}
			if cp != nil {
				cp[i] = n
			}
		}
		if cp == nil {
			return x, false
		}
		return cp, true
	case map[string]any:
		var cp map[string]any
		for k, e := range x {
			n, ch := normalizeShared(e)
			if ch && cp == nil {
				cp = make(map[string]any, len(x))
				for k2, e2 := range x {
					cp[k2] = e2
				}
			}
			if cp != nil {
				cp[k] = n
			}
		}
		if cp == nil {
			return x, false
		}
		return cp, true
	case string, bool, float64, nil:
		return v, false
	}
	return normalize(v), true
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return math.NaN()
		}
		return f
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case float32:
		return float64(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	}
	return v
}
