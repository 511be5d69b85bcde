package evaluator

import (
	"math"
	"strconv"
)

// maxFractionalWeight is flagd's limit for one weight and for their sum
// (math.MaxInt32): past it flagd gives up on the whole fractional.
const maxFractionalWeight = math.MaxInt32

// fractional is flagd's deterministic percentage split:
//
//	{"fractional": [<bucketBy>?, [<variant>, <weight>?], ...]}
//
// It is hashed with MurmurHash3 x86 32 (seed 0) and mapped onto the total
// weight with flagd's "v2" integer method, bucket = (hash × totalWeight) >> 32,
// which has no floating-point edge cases; buckets are walked in order.
//
// Every edge case answers what flagd's core/pkg/evaluator/fractional.go
// answers, because a user moving from flagd must not see a single user
// change bucket:
//
//   - bucketing value: a string (also "") is hashed as it is; null (a
//     missing attribute) falls back to $flagd.flagKey + targetingKey, as
//     does no bucketing value at all; a number, boolean or object is not a
//     bucketing value and flagd then fails to read the buckets: null.
//   - targetingKey fallback: it must be a string (an empty one is hashed);
//     missing or another type gives null.
//   - variant names may be expressions; every name must evaluate to a
//     string, boolean, number or null (flagd checks all of them, not only
//     the chosen one), otherwise null. A boolean or number is returned as
//     is, so it selects the variant named "true"/"false"/"1".
//   - weights default to 1 (also when a computed weight is null); they must
//     be whole numbers no larger than 2^31-1, otherwise null; negative
//     weights count as 0; a total of 0 or above 2^31-1 gives null.
//
// null means the flag's default variant (reason DEFAULT).
func (c *compiler) compileFractional(op string, raw any, path string) node {
	a := args(raw)
	var bucketBy node
	if len(a) > 0 {
		if _, isBucket := a[0].([]any); !isBucket {
			bucketBy = c.compile(a[0], joinPath(path, "fractional[0]"))
			a = a[1:]
		}
	}
	// The targetingKey fallback applies whenever the bucketing value is
	// null, so it is always a possible read.
	c.reads["targetingKey"] = struct{}{}
	if len(a) == 0 {
		c.problem(joinPath(path, op), "fractional needs at least one [variant, weight] bucket")
		return constNode(nil)
	}
	fb := &fracBuckets{flagKey: c.flagKey, bucketBy: bucketBy, buckets: make([]fracBucket, len(a))}
	offset := len(args(raw)) - len(a)
	var constTotal uint64
	for i, b := range a {
		bp := joinPath(path, "fractional["+strconv.Itoa(i+offset)+"]")
		arr, ok := b.([]any)
		if !ok || len(arr) == 0 || len(arr) > 2 {
			c.problem(bp, "a fractional bucket must be [variant] or [variant, weight]")
			return constNode(nil)
		}
		fbk := &fb.buckets[i]
		if _, isArr := arr[0].([]any); isArr {
			c.problem(bp+"[0]", "a fractional variant must be a string, boolean, number or an expression giving one, got an array")
			return constNode(nil)
		}
		_, isRule := arr[0].(map[string]any)
		fbk.constName = !isRule
		fbk.name = c.compile(arr[0], bp+"[0]")
		if !fbk.constName {
			fb.dynamicNames = true
		}
		fbk.w = 1
		if len(arr) == 2 {
			switch w := arr[1].(type) {
			case float64:
				var ok bool
				if fbk.w, ok = fracWeight(w); !ok {
					fb.neverMatches = true // flagd rejects the fractional on every evaluation
				}
			case nil:
				// flagd: a null weight is the default weight 1
			case map[string]any:
				fbk.weight = c.compile(w, bp+"[1]")
				fb.dynamicWeights = true
			default:
				c.problem(bp+"[1]", "a fractional weight must be a number or an expression, got %s", typeName(w))
				return constNode(nil)
			}
		}
		constTotal += fbk.w
	}
	if constTotal > maxFractionalWeight {
		fb.neverMatches = true
	}
	fb.constTotal = constTotal
	if fb.neverMatches {
		return constNode(nil)
	}
	return fb.eval
}

type fracBucket struct {
	name      node
	constName bool   // name is a JSON constant (checked at compile time)
	weight    node   // nil: constant weight w
	w         uint64 // constant weight
}

type fracBuckets struct {
	flagKey        string
	bucketBy       node // nil: $flagd.flagKey + targetingKey
	buckets        []fracBucket
	constTotal     uint64
	dynamicNames   bool
	dynamicWeights bool
	neverMatches   bool
}

// fracWeight applies flagd's weight rules to one number: whole numbers only,
// at most 2^31-1, negatives count as 0.
func fracWeight(w float64) (uint64, bool) {
	// flagd checks w == float64(int64(w)): NaN, ±Inf, fractions and
	// numbers outside int64 all fail it.
	if math.IsNaN(w) || math.IsInf(w, 0) || w != math.Trunc(w) || w < math.MinInt64 || w > maxFractionalWeight {
		return 0, false
	}
	if w < 0 {
		return 0, true
	}
	return uint64(w), true
}

// weightOf evaluates bucket b's weight; ok is false when flagd would reject it.
func (b *fracBucket) weightOf(e *env) (uint64, bool) {
	if b.weight == nil {
		return b.w, true
	}
	switch w := b.weight(e).(type) {
	case nil:
		return 1, true
	case float64:
		return fracWeight(w)
	}
	return 0, false
}

func (fb *fracBuckets) eval(e *env) any {
	var h uint32
	var s string
	useKey := fb.bucketBy == nil
	if !useKey {
		switch v := fb.bucketBy(e).(type) {
		case string:
			s = v
		case nil:
			useKey = true // a missing bucketing attribute: targetingKey, as flagd
		default:
			return nil
		}
	}
	if useKey {
		tk, ok := e.root.TargetingKey()
		if !ok {
			return nil // no targeting key: flagd cannot bucket, default variant
		}
		h = murmur3(fb.flagKey, tk)
	} else {
		h = murmur3(s, "")
	}
	// flagd evaluates and checks every bucket before choosing one.
	if fb.dynamicNames {
		for i := range fb.buckets {
			if b := &fb.buckets[i]; !b.constName && !validFracName(b.name(e)) {
				return nil
			}
		}
	}
	total := fb.constTotal
	var weights [16]uint64 // computed weights of the first 16 buckets, kept for the walk
	if fb.dynamicWeights {
		total = 0
		for i := range fb.buckets {
			w, ok := fb.buckets[i].weightOf(e)
			if !ok {
				return nil
			}
			if i < len(weights) {
				weights[i] = w
			}
			total += w
		}
		if total > maxFractionalWeight {
			return nil
		}
	}
	if total == 0 {
		return nil
	}
	point := (uint64(h) * total) >> 32
	var end uint64
	for i := range fb.buckets {
		b := &fb.buckets[i]
		w := b.w
		if fb.dynamicWeights {
			if i < len(weights) {
				w = weights[i]
			} else {
				// Past the first 16 the weight is computed again (rules are
				// pure, so it is the same value); a constant weight is b.w.
				w, _ = b.weightOf(e)
			}
		}
		end += w
		if point < end {
			return b.name(e)
		}
	}
	return nil
}

// validFracName reports whether v can name a variant in flagd's fractional.
func validFracName(v any) bool {
	switch v.(type) {
	case string, bool, float64, nil:
		return true
	}
	return false
}
