package evaluator

import (
	"math"
	"strconv"
)

// fractional is flagd's deterministic percentage split:
//
//	{"fractional": [<bucketBy>?, [<variant>, <weight>?], ...]}
//
// The bucketing value defaults to $flagd.flagKey + targetingKey. It is hashed
// with MurmurHash3 x86 32 (seed 0) and mapped onto the total weight with
// flagd's "v2" integer method, bucket = (hash × totalWeight) >> 32, which has
// no floating-point edge cases; buckets are walked in order. Weights default
// to 1, negative weights count as 0, all-zero weights give null (default
// variant). Variant names and weights may themselves be expressions.
func (c *compiler) compileFractional(op string, raw any, path string) node {
	a := args(raw)
	var bucketBy node
	if len(a) > 0 {
		if _, isBucket := a[0].([]any); !isBucket {
			bucketBy = c.compile(a[0], joinPath(path, "fractional[0]"))
			a = a[1:]
		}
	}
	if bucketBy == nil {
		c.reads["targetingKey"] = struct{}{}
	}
	if len(a) == 0 {
		c.problem(joinPath(path, op), "fractional needs at least one [variant, weight] bucket")
		return constNode(nil)
	}
	type bucket struct {
		name   node
		weight node
		w      uint64 // constant weight when weight is nil
	}
	buckets := make([]bucket, len(a))
	constTotal, allConst := uint64(0), true
	offset := len(args(raw)) - len(a)
	for i, b := range a {
		bp := joinPath(path, "fractional["+strconv.Itoa(i+offset)+"]")
		arr, ok := b.([]any)
		if !ok || len(arr) == 0 || len(arr) > 2 {
			c.problem(bp, "a fractional bucket must be [variant] or [variant, weight]")
			return constNode(nil)
		}
		buckets[i].name = c.compile(arr[0], bp+"[0]")
		buckets[i].w = 1
		if len(arr) == 2 {
			switch w := arr[1].(type) {
			case float64:
				buckets[i].w = clampWeight(w)
			case map[string]any:
				buckets[i].weight = c.compile(w, bp+"[1]")
				allConst = false
			default:
				c.problem(bp+"[1]", "a fractional weight must be a number, got %s", typeName(w))
				return constNode(nil)
			}
		}
		constTotal += buckets[i].w
	}
	flagKey := c.flagKey
	return func(e *env) any {
		var h uint32
		if bucketBy != nil {
			v := bucketBy(e)
			s, ok := v.(string)
			if !ok {
				if v == nil {
					return nil // no bucketing value: default variant
				}
				s = toString(v)
			}
			h = murmur3(s, "")
		} else {
			tk, _ := e.root["targetingKey"].(string)
			h = murmur3(flagKey, tk)
		}
		total := constTotal
		var weights [16]uint64
		if !allConst {
			total = 0
			for i, b := range buckets {
				w := b.w
				if b.weight != nil {
					w = clampWeight(toNumber(b.weight(e)))
				}
				if i < len(weights) {
					weights[i] = w
				}
				total += w
			}
		}
		if total == 0 {
			return nil
		}
		point := (uint64(h) * total) >> 32
		var end uint64
		for i, b := range buckets {
			w := b.w
			if !allConst {
				if i < len(weights) {
					w = weights[i]
				} else {
					w = clampWeight(toNumber(b.weight(e)))
				}
			}
			end += w
			if point < end {
				return b.name(e)
			}
		}
		return nil
	}
}

func clampWeight(w float64) uint64 {
	if math.IsNaN(w) || w <= 0 {
		return 0
	}
	if w > 1e12 {
		return 1e12
	}
	return uint64(w)
}
