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

// truthy is JSON Logic's truthiness: empty arrays are false, objects true.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0 && !math.IsNaN(x)
	case string:
		return x != ""
	case []any:
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

// looseEqual is JavaScript's ==.
func looseEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		if y, ok := b.(bool); ok {
			return x == y
		}
		if b == nil {
			return false
		}
		return looseEqual(toNumber(x), b)
	case float64:
		switch y := b.(type) {
		case float64:
			return x == y
		case string, bool:
			return x == toNumber(y)
		case []any:
			return looseEqual(x, toString(y))
		}
		return false
	case string:
		switch y := b.(type) {
		case string:
			return x == y
		case float64, bool:
			return toNumber(x) == toNumber(y)
		case []any:
			return x == toString(y)
		}
		return false
	case []any:
		switch b.(type) {
		case string, float64, bool:
			return looseEqual(b, a)
		}
		return false
	}
	return false
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

// less reports a < b with JavaScript's relational semantics (strings compare
// as strings when both are strings, otherwise both become numbers).
func less(a, b any) bool {
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa < sb
		}
	}
	x, y := toNumber(a), toNumber(b)
	return x < y
}

// lessEq reports a <= b (false when either side is NaN, as in JavaScript).
func lessEq(a, b any) bool {
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa <= sb
		}
	}
	x, y := toNumber(a), toNumber(b)
	return x <= y
}

// normalize turns decoded JSON with json.Number (or Go ints) into the
// evaluator's value types.
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
