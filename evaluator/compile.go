package evaluator

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// node is a compiled JSON Logic expression. Compiling once at load and
// calling closures per request is what keeps evaluation in nanoseconds: the
// rule's JSON is never looked at again.
type node func(e *env) any

// env is the per-evaluation state a node reads.
type env struct {
	root    *Context // the evaluation context
	scope   any      // current data inside map/filter/reduce/all/some/none
	flagKey string
	now     func() time.Time
	// fail is set by an operator that flagd's JSON Logic library aborts on
	// (arithmetic on null, a non-finite result): the whole evaluation then
	// answers ERROR/PARSE_ERROR, as flagd does. A constant string, so
	// failing costs no allocation.
	fail string
}

// compiler compiles one flag's targeting and records what it reads.
type compiler struct {
	flagKey  string
	problems []Problem
	reads    map[string]struct{} // context paths read at top scope
	dynamic  bool                // reads the context in a way that cannot be enumerated
	clock    bool                // reads $flagd.timestamp
	depth    int                 // >0 inside map/filter/reduce/...: var reads the item
	nodes    int                 // compiled nodes: a rough cost of evaluating the rule
	fallible int                 // compiled operators that can abort an evaluation (arithmetic)
}

func newCompiler(flagKey string) *compiler {
	return &compiler{flagKey: flagKey, reads: map[string]struct{}{}}
}

func (c *compiler) problem(path, format string, args ...any) {
	c.problems = append(c.problems, Problem{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// CompileTargeting checks one targeting rule on its own and returns its
// problems, with paths relative to the rule (e.g. `if[0]`).
func CompileTargeting(rule any) []Problem {
	c := newCompiler("")
	if !isEmptyRule(rule) {
		c.compile(normalize(rule), "")
	}
	return c.problems
}

func isEmptyRule(rule any) bool {
	if rule == nil {
		return true
	}
	m, ok := rule.(map[string]any)
	return ok && len(m) == 0
}

func joinPath(base, elem string) string {
	if base == "" {
		return elem
	}
	if strings.HasPrefix(elem, "[") {
		return base + elem
	}
	return base + "." + elem
}

func constNode(v any) node { return func(*env) any { return v } }

// compile compiles a normalized JSON value found at path.
func (c *compiler) compile(v any, path string) node {
	c.nodes++
	switch x := v.(type) {
	case map[string]any:
		if len(x) != 1 {
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			c.problem(path, "a rule object must have exactly one operator, found %d (%s)", len(x), strings.Join(keys, ", "))
			return constNode(nil)
		}
		for op, raw := range x {
			return c.compileOp(op, raw, path)
		}
	case []any:
		elems := make([]node, len(x))
		allConst := true
		for i, e := range x {
			elems[i] = c.compile(e, joinPath(path, "["+strconv.Itoa(i)+"]"))
			if _, isRule := e.(map[string]any); isRule {
				allConst = false
			}
			if _, isArr := e.([]any); isArr {
				allConst = false
			}
		}
		if allConst {
			return constNode(x)
		}
		return func(e *env) any {
			out := make([]any, len(elems))
			for i, n := range elems {
				out[i] = n(e)
			}
			return out
		}
	}
	return constNode(v)
}

// args normalizes an operator's argument: JSON Logic allows a single
// argument without the array.
func args(raw any) []any {
	if a, ok := raw.([]any); ok {
		return a
	}
	return []any{raw}
}

func (c *compiler) compileArgs(op string, raw any, path string) []node {
	a := args(raw)
	out := make([]node, len(a))
	for i, v := range a {
		out[i] = c.compile(v, joinPath(path, op+"["+strconv.Itoa(i)+"]"))
	}
	return out
}

// operator compilers, keyed by JSON Logic name.
type opCompiler func(c *compiler, op string, raw any, path string) node

var operators map[string]opCompiler

func init() {
	operators = map[string]opCompiler{
		"var":          (*compiler).compileVar,
		"missing":      (*compiler).compileMissing,
		"missing_some": (*compiler).compileMissingSome,
		"if":           (*compiler).compileIf,
		"?:":           (*compiler).compileIf,
		"==":           binary(looseEqual),
		"===":          binary(strictEqual),
		"!=":           binary(func(a, b any) bool { return !looseEqual(a, b) }),
		"!==":          binary(func(a, b any) bool { return !strictEqual(a, b) }),
		"!":            unaryBool(func(v any) bool { return !truthy(v) }),
		"!!":           unaryBool(truthy),
		"and":          (*compiler).compileAnd,
		"or":           (*compiler).compileOr,
		"<":            comparison(less),
		"<=":           comparison(lessEq),
		">":            comparison(func(a, b any) bool { return less(b, a) }),
		">=":           comparison(func(a, b any) bool { return lessEq(b, a) }),
		"in":           (*compiler).compileIn,
		"cat":          (*compiler).compileCat,
		"substr":       (*compiler).compileSubstr,
		"+":            (*compiler).compilePlus,
		"-":            (*compiler).compileMinus,
		"*":            (*compiler).compileTimes,
		"/":            arith(func(a, b float64) float64 { return a / b }),
		"%":            arith(jsMod),
		"min":          (*compiler).compileMinMax,
		"max":          (*compiler).compileMinMax,
		"merge":        (*compiler).compileMerge,
		"map":          (*compiler).compileMap,
		"filter":       (*compiler).compileFilter,
		"reduce":       (*compiler).compileReduce,
		"all":          (*compiler).compileAll,
		"some":         (*compiler).compileSome,
		"none":         (*compiler).compileNone,
		"log":          (*compiler).compileLog,
		"fractional":   (*compiler).compileFractional,
		"sem_ver":      (*compiler).compileSemVer,
		"starts_with":  stringOp(strings.HasPrefix),
		"ends_with":    stringOp(strings.HasSuffix),
	}
}

func (c *compiler) compileOp(op string, raw any, path string) node {
	if op == "$ref" {
		c.problem(path, "unresolved $ref %v (references are substituted from $evaluators before compiling)", raw)
		return constNode(nil)
	}
	f, ok := operators[op]
	if !ok {
		c.problem(path, "unknown operator %q", op)
		return constNode(nil)
	}
	return f(c, op, raw, path)
}
