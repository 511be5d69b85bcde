package evaluator

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

var (
	trueVal  any = true
	falseVal any = false
)

func boolVal(b bool) any {
	if b {
		return trueVal
	}
	return falseVal
}

// --- data access -----------------------------------------------------------

func (c *compiler) compileVar(op string, raw any, path string) node {
	a := args(raw)
	if len(a) == 0 {
		return c.varPath(nil, path)
	}
	var def node
	defFallible := false
	if len(a) > 1 {
		before := c.fallible
		def = c.compile(a[1], joinPath(path, "var[1]"))
		defFallible = c.fallible != before
	}
	var get node
	switch p := a[0].(type) {
	case string:
		get = c.varPath(p, path)
	case float64:
		get = c.varPath(formatNumber(p), path)
	case nil:
		get = c.varPath("", path)
	case map[string]any:
		// A computed path: which attributes are read is unknown until run time.
		// Inside map/filter/all/some/none/reduce it reads the current element,
		// whose attributes are covered by the array's own read.
		inScope := c.depth > 0
		if !inScope {
			c.dynamic = true
		}
		pn := c.compile(p, joinPath(path, "var[0]"))
		get = func(e *env) any {
			// inScope is fixed at compile time: reading c.depth here (it is 0
			// once compiling ends) made every computed path read the root
			// context, so equal cache keys could get different answers.
			return e.at(inScope, splitPath(toString(pn(e))))
		}
	default:
		c.problem(joinPath(path, "var[0]"), "var path must be a string or number, got %s", typeName(p))
		return constNode(nil)
	}
	if def == nil {
		return get
	}
	if defFallible {
		// flagd's library evaluates var's arguments, the default included,
		// before reading: arithmetic on null in the default aborts even when
		// the attribute is present.
		return func(e *env) any {
			d := def(e)
			if v := get(e); v != nil {
				return v
			}
			return d
		}
	}
	return func(e *env) any {
		if v := get(e); v != nil {
			return v
		}
		return def(e)
	}
}

func (e *env) data(inScope bool) any {
	if inScope {
		return e.scope
	}
	return e.root.Map()
}

// at is lookup(e.data(inScope), segs) without building the context's map.
func (e *env) at(inScope bool, segs []string) any {
	if inScope {
		return lookup(e.scope, segs)
	}
	return e.root.lookup(segs)
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

// varPath compiles a constant var path.
func (c *compiler) varPath(p any, path string) node {
	s, _ := p.(string)
	inScope := c.depth > 0
	if s == "" {
		if !inScope {
			c.dynamic = true // the whole context
		}
		return func(e *env) any { return e.data(inScope) }
	}
	if !inScope {
		switch {
		case s == "$flagd.flagKey":
			var key any = c.flagKey
			return constNode(key)
		case s == "$flagd.timestamp":
			c.clock = true
			return func(e *env) any { return float64(e.now().Unix()) }
		case s == "$flagd" || strings.HasPrefix(s, "$flagd."):
			c.clock = true
			rest := splitPath(strings.TrimPrefix(strings.TrimPrefix(s, "$flagd"), "."))
			return func(e *env) any {
				m := map[string]any{"flagKey": e.flagKey, "timestamp": float64(e.now().Unix())}
				return lookup(m, rest)
			}
		}
		c.reads[s] = struct{}{}
	}
	segs := splitPath(s)
	switch {
	case len(segs) == 1 && !inScope:
		k := segs[0]
		return func(e *env) any {
			v, _ := e.root.get(k)
			return v
		}
	case len(segs) == 1:
		k := segs[0]
		return func(e *env) any {
			if m, ok := e.scope.(map[string]any); ok {
				return m[k]
			}
			return lookup(e.scope, segs)
		}
	}
	return func(e *env) any { return e.at(inScope, segs) }
}

// lookup walks a dotted path through objects and arrays.
func lookup(v any, segs []string) any {
	for _, s := range segs {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[s]; !ok {
				return nil
			}
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func (c *compiler) compileMissing(op string, raw any, path string) node {
	c.noteDynamicKeys(raw)
	ns := c.compileArgs(op, raw, path)
	inScope := c.depth > 0
	return func(e *env) any {
		var keys []any
		if len(ns) > 0 {
			if arr, ok := ns[0](e).([]any); ok {
				keys = arr
			}
		}
		if keys == nil {
			keys = make([]any, len(ns))
			for i, n := range ns {
				keys[i] = n(e)
			}
		}
		missing := []any{}
		for _, k := range keys {
			v := e.at(inScope, splitPath(toString(k)))
			if v == nil || v == "" {
				missing = append(missing, k)
			}
		}
		return missing
	}
}

// noteDynamicKeys records the attributes missing/missing_some read when
// they are literal, and marks the flag uncacheable when they are computed.
func (c *compiler) noteDynamicKeys(raw any) {
	if c.depth > 0 {
		return
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			c.reads[x] = struct{}{}
		case float64:
			c.reads[formatNumber(x)] = struct{}{}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			c.dynamic = true
		}
	}
	walk(raw)
}

func (c *compiler) compileMissingSome(op string, raw any, path string) node {
	a := args(raw)
	if len(a) != 2 {
		c.problem(joinPath(path, op), "missing_some takes [minimum, [keys]], got %d arguments", len(a))
		return constNode(nil)
	}
	c.noteDynamicKeys(a[1])
	minN := c.compile(a[0], joinPath(path, op+"[0]"))
	keysN := c.compile(a[1], joinPath(path, op+"[1]"))
	inScope := c.depth > 0
	return func(e *env) any {
		need := toNumber(minN(e))
		keys, _ := keysN(e).([]any)
		missing := []any{}
		found := 0
		for _, k := range keys {
			v := e.at(inScope, splitPath(toString(k)))
			if v == nil || v == "" {
				missing = append(missing, k)
			} else {
				found++
			}
		}
		if float64(found) >= need {
			return []any{}
		}
		return missing
	}
}

// --- logic -------------------------------------------------------------------

func (c *compiler) compileIf(op string, raw any, path string) node {
	a := args(raw)
	ns := make([]node, len(a))
	var fallible []int // arguments that can abort the evaluation (arithmetic)
	for i, v := range a {
		before := c.fallible
		ns[i] = c.compile(v, joinPath(path, op+"["+strconv.Itoa(i)+"]"))
		if c.fallible != before {
			fallible = append(fallible, i)
		}
	}
	choose := func(e *env) (any, int) {
		i := 0
		for ; i+1 < len(ns); i += 2 {
			if truthy(ns[i](e)) {
				return ns[i+1](e), i + 1
			}
		}
		if i < len(ns) {
			return ns[i](e), i
		}
		return nil, i
	}
	if len(fallible) == 0 {
		return func(e *env) any {
			v, _ := choose(e)
			return v
		}
	}
	// flagd's JSON Logic library evaluates every argument of "if" before
	// choosing, so arithmetic on null in a branch not taken still aborts the
	// evaluation there. Only arguments that can fail are evaluated again for
	// that; their values are discarded.
	return func(e *env) any {
		v, taken := choose(e)
		if e.fail == "" {
			for _, i := range fallible {
				// choose evaluated the conditions before taken and taken
				// itself; the rest were skipped.
				if i > taken || (i < taken && i%2 == 1) {
					ns[i](e)
				}
			}
		}
		return v
	}
}

func (c *compiler) compileAnd(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	return func(e *env) any {
		var v any
		for _, n := range ns {
			if v = n(e); !truthy(v) {
				return v
			}
		}
		return v
	}
}

func (c *compiler) compileOr(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	return func(e *env) any {
		var v any
		for _, n := range ns {
			if v = n(e); truthy(v) {
				return v
			}
		}
		return v
	}
}

func binary(f func(a, b any) bool) opCompiler {
	return func(c *compiler, op string, raw any, path string) node {
		ns := c.compileArgs(op, raw, path)
		if len(ns) < 2 {
			c.problem(joinPath(path, op), "%s needs 2 arguments, got %d", op, len(ns))
			return constNode(nil)
		}
		a, b := ns[0], ns[1]
		return func(e *env) any { return boolVal(f(a(e), b(e))) }
	}
}

func unaryBool(f func(any) bool) opCompiler {
	return func(c *compiler, op string, raw any, path string) node {
		ns := c.compileArgs(op, raw, path)
		if len(ns) == 0 {
			return constNode(boolVal(f(nil)))
		}
		a := ns[0]
		return func(e *env) any { return boolVal(f(a(e))) }
	}
}

// comparison supports the two-argument form and JSON Logic's three-argument
// "between" form for < and <= (a < b < c).
func comparison(f func(a, b any) bool) opCompiler {
	return func(c *compiler, op string, raw any, path string) node {
		ns := c.compileArgs(op, raw, path)
		switch {
		case len(ns) == 2:
			a, b := ns[0], ns[1]
			return func(e *env) any { return boolVal(f(a(e), b(e))) }
		case len(ns) == 3 && (op == "<" || op == "<="):
			a, b, d := ns[0], ns[1], ns[2]
			return func(e *env) any {
				mid := b(e)
				return boolVal(f(a(e), mid) && f(mid, d(e)))
			}
		}
		c.problem(joinPath(path, op), "%s needs 2 arguments (or 3 for the between form of < and <=), got %d", op, len(ns))
		return constNode(nil)
	}
}

// --- strings and arrays --------------------------------------------------------

// smallSet is how many constant strings an `in` list needs before a hash set
// beats a linear scan.
const smallSet = 8

func (c *compiler) compileIn(op string, raw any, path string) node {
	a := args(raw)
	if len(a) != 2 {
		c.problem(joinPath(path, op), "in needs 2 arguments [needle, haystack], got %d", len(a))
		return constNode(nil)
	}
	needle := c.compile(a[0], joinPath(path, "in[0]"))
	if list, ok := a[1].([]any); ok && len(list) >= smallSet {
		set := make(map[string]struct{}, len(list))
		allStrings := true
		for _, v := range list {
			s, ok := v.(string)
			if !ok {
				allStrings = false
				break
			}
			set[s] = struct{}{}
		}
		if allStrings {
			return func(e *env) any {
				s, ok := needle(e).(string)
				if !ok {
					return falseVal
				}
				_, hit := set[s]
				return boolVal(hit)
			}
		}
	}
	hay := c.compile(a[1], joinPath(path, "in[1]"))
	return func(e *env) any {
		n := needle(e)
		switch h := hay(e).(type) {
		case string:
			if s, ok := n.(string); ok {
				return boolVal(strings.Contains(h, s))
			}
			return boolVal(strings.Contains(h, toString(n)))
		case []any:
			for _, v := range h {
				if strictEqual(n, v) {
					return trueVal
				}
			}
		}
		return falseVal
	}
}

// failCat is why an evaluation fails when cat meets a non-string value.
const failCat = "cat got a boolean, an array or an object; flagd's JSON Logic aborts such an evaluation and answers PARSE_ERROR"

// compileCat is cat as flagd's JSON Logic library computes it, which is
// what fractional bucketing values built with cat hash: null adds nothing,
// numbers are written in plain decimal (strconv 'f', no exponent), a
// boolean, array or object aborts the evaluation, and the result is trimmed
// of surrounding white space. A bare string argument is returned as is.
func (c *compiler) compileCat(op string, raw any, path string) node {
	if s, ok := raw.(string); ok {
		c.nodes++
		return constNode(s)
	}
	ns := c.compileArgs(op, raw, path)
	c.fallible++
	return func(e *env) any {
		var b strings.Builder
		for _, n := range ns {
			switch v := n(e).(type) {
			case string:
				b.WriteString(v)
			case nil:
			case float64:
				var num [32]byte
				b.Write(strconv.AppendFloat(num[:0], v, 'f', -1, 64))
			default:
				e.fail = failCat
				return nil
			}
		}
		return strings.TrimSpace(b.String())
	}
}

func (c *compiler) compileSubstr(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	if len(ns) < 2 || len(ns) > 3 {
		c.problem(joinPath(path, op), "substr takes [string, start] or [string, start, length], got %d arguments", len(ns))
		return constNode(nil)
	}
	return func(e *env) any {
		s := toString(ns[0](e))
		r := []rune(s)
		start := int(toNumber(ns[1](e)))
		if start < 0 {
			start = max(len(r)+start, 0)
		}
		start = min(start, len(r))
		end := len(r)
		if len(ns) == 3 {
			l := int(toNumber(ns[2](e)))
			if l < 0 {
				end = max(len(r)+l, start)
			} else {
				end = min(start+l, len(r))
			}
		}
		if !utf8.ValidString(s) {
			return s
		}
		return string(r[start:end])
	}
}

func stringOp(f func(s, affix string) bool) opCompiler {
	return func(c *compiler, op string, raw any, path string) node {
		ns := c.compileArgs(op, raw, path)
		if len(ns) != 2 {
			// flagd loads such rules and answers null (the default variant).
			return constNode(nil)
		}
		a, b := ns[0], ns[1]
		// flagd returns null (not false) when an argument is not a string, so a
		// bad context falls back to the default variant instead of matching "else".
		return func(e *env) any {
			s, ok1 := a(e).(string)
			affix, ok2 := b(e).(string)
			if !ok1 || !ok2 {
				return nil
			}
			return boolVal(f(s, affix))
		}
	}
}

func (c *compiler) compileMerge(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	return func(e *env) any {
		out := []any{}
		for _, n := range ns {
			v := n(e)
			if arr, ok := v.([]any); ok {
				out = append(out, arr...)
			} else {
				out = append(out, v)
			}
		}
		return out
	}
}

// --- arithmetic ---------------------------------------------------------------

// failArith is why an evaluation fails when arithmetic meets a non-number.
const failArith = "an arithmetic operator (+, -, *, /, %) got null, a boolean, an array or an object; " +
	"flagd's JSON Logic aborts such an evaluation and answers PARSE_ERROR"

// arithNumber converts an operand the way flagd's JSON Logic library
// (diegoholiveira/jsonlogic, typing.ToNumber) does for + - * / %: numbers
// as they are, strings parsed with strconv.ParseFloat (a string that is not
// a number counts as 0, not NaN as in JavaScript), and anything else --
// null included -- is an error that aborts the whole evaluation. ok is false
// for those; the caller records e.fail.
func arithNumber(v any) (f float64, ok bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, _ = strconv.ParseFloat(x, 64) // 0 on a syntax error, ±Inf out of range
		return f, true
	}
	return 0, false
}

// operand evaluates n as an arithmetic operand, recording a failure in e.
func operand(e *env, n node) float64 {
	f, ok := arithNumber(n(e))
	if !ok {
		e.fail = failArith
	}
	return f
}

// nullPassing wraps the node of a unary arithmetic operator written without
// an argument array ({"+": {"var": "x"}}): flagd's library returns null for
// a null operand there instead of failing, because it checks the evaluated
// argument for null before converting it.
func nullPassing(raw any, ns []node, n node) node {
	if _, bare := raw.(map[string]any); !bare {
		return n
	}
	arg := ns[0]
	return func(e *env) any {
		if arg(e) == nil {
			return nil
		}
		return n(e)
	}
}

func (c *compiler) compilePlus(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	c.fallible++
	return nullPassing(raw, ns, func(e *env) any {
		sum := 0.0
		for _, n := range ns {
			sum += operand(e, n)
		}
		return sum
	})
}

func (c *compiler) compileTimes(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	c.fallible++
	return nullPassing(raw, ns, func(e *env) any {
		p := 1.0
		for _, n := range ns {
			p *= operand(e, n)
		}
		return p
	})
}

func (c *compiler) compileMinus(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	c.fallible++
	if _, bare := raw.(map[string]any); bare {
		return nullPassing(raw, ns, func(e *env) any { return -operand(e, ns[0]) })
	}
	switch len(ns) {
	case 1:
		return func(e *env) any { return -operand(e, ns[0]) }
	case 2:
		return func(e *env) any {
			a := operand(e, ns[0])
			return a - operand(e, ns[1])
		}
	}
	c.problem(joinPath(path, op), "- takes 1 or 2 arguments, got %d", len(ns))
	return constNode(nil)
}

func arith(f func(a, b float64) float64) opCompiler {
	return func(c *compiler, op string, raw any, path string) node {
		ns := c.compileArgs(op, raw, path)
		if len(ns) != 2 {
			c.problem(joinPath(path, op), "%s needs 2 arguments, got %d", op, len(ns))
			return constNode(nil)
		}
		c.fallible++
		return func(e *env) any {
			a := operand(e, ns[0])
			return f(a, operand(e, ns[1]))
		}
	}
}

func jsMod(a, b float64) float64 { return math.Mod(a, b) }

func (c *compiler) compileMinMax(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	isMax := op == "max"
	return func(e *env) any {
		if len(ns) == 0 {
			return nil
		}
		best := 0.0
		for i, n := range ns {
			v := toNumber(n(e))
			if math.IsNaN(v) {
				return nil
			}
			if i == 0 || (isMax && v > best) || (!isMax && v < best) {
				best = v
			}
		}
		return best
	}
}

// --- array iteration ----------------------------------------------------------

// scoped compiles the per-item expression of map/filter/... with var reading
// the item rather than the context.
func (c *compiler) scoped(v any, path string) node {
	c.depth++
	n := c.compile(v, path)
	c.depth--
	return n
}

func (c *compiler) iterArgs(op string, raw any, path string, min int) (node, node, []any, bool) {
	a := args(raw)
	if len(a) < min {
		c.problem(joinPath(path, op), "%s needs at least %d arguments, got %d", op, min, len(a))
		return nil, nil, nil, false
	}
	arr := c.compile(a[0], joinPath(path, op+"[0]"))
	var body node = constNode(nil)
	if len(a) > 1 {
		body = c.scoped(a[1], joinPath(path, op+"[1]"))
	}
	return arr, body, a, true
}

func withScope(e *env, item any, f node) any {
	saved := e.scope
	e.scope = item
	v := f(e)
	e.scope = saved
	return v
}

func (c *compiler) compileMap(op string, raw any, path string) node {
	arr, body, _, ok := c.iterArgs(op, raw, path, 2)
	if !ok {
		return constNode(nil)
	}
	return func(e *env) any {
		in, _ := arr(e).([]any)
		out := make([]any, 0, len(in))
		for _, it := range in {
			out = append(out, withScope(e, it, body))
		}
		return out
	}
}

func (c *compiler) compileFilter(op string, raw any, path string) node {
	arr, body, _, ok := c.iterArgs(op, raw, path, 2)
	if !ok {
		return constNode(nil)
	}
	return func(e *env) any {
		in, _ := arr(e).([]any)
		out := make([]any, 0, len(in))
		for _, it := range in {
			if truthy(withScope(e, it, body)) {
				out = append(out, it)
			}
		}
		return out
	}
}

func (c *compiler) compileReduce(op string, raw any, path string) node {
	arr, body, a, ok := c.iterArgs(op, raw, path, 2)
	if !ok {
		return constNode(nil)
	}
	var initial node = constNode(nil)
	if len(a) > 2 {
		initial = c.compile(a[2], joinPath(path, "reduce[2]"))
	}
	return func(e *env) any {
		in, _ := arr(e).([]any)
		acc := initial(e)
		for _, it := range in {
			acc = withScope(e, map[string]any{"current": it, "accumulator": acc}, body)
		}
		return acc
	}
}

func quantifier(c *compiler, op string, raw any, path string, emptyResult bool, decide func(hits, n int) bool) node {
	arr, body, _, ok := c.iterArgs(op, raw, path, 2)
	if !ok {
		return constNode(nil)
	}
	return func(e *env) any {
		in, _ := arr(e).([]any)
		if len(in) == 0 {
			return boolVal(emptyResult)
		}
		hits := 0
		for _, it := range in {
			if truthy(withScope(e, it, body)) {
				hits++
			}
		}
		return boolVal(decide(hits, len(in)))
	}
}

func (c *compiler) compileAll(op string, raw any, path string) node {
	return quantifier(c, op, raw, path, false, func(h, n int) bool { return h == n })
}

func (c *compiler) compileSome(op string, raw any, path string) node {
	return quantifier(c, op, raw, path, false, func(h, n int) bool { return h > 0 })
}

func (c *compiler) compileNone(op string, raw any, path string) node {
	return quantifier(c, op, raw, path, true, func(h, n int) bool { return h == 0 })
}

func (c *compiler) compileLog(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	if len(ns) == 0 {
		return constNode(nil)
	}
	return ns[0] // pennon never logs from the evaluator; log is the identity
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}
