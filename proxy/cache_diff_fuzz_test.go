package proxy

// A differential fuzz test of the response cache. The cache may only ever
// cost a recomputation, never change an answer, so for generated targeting
// and generated contexts:
//
//  1. equal cache keys imply equal answers (Flag.AppendCacheKey covers
//     everything the answer depends on), and
//  2. the caching handler answers byte for byte what a handler without a
//     cache answers, which is the evaluator's own answer encoded.
//
// The generator is driven by the fuzz input, so `go test -fuzz
// FuzzCacheDifferential ./proxy` explores it; the seed corpus (fixed seeds
// below, plus named cases for bugs found before) runs in every `go test`.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

// ruleGen builds JSON Logic targeting and contexts from fuzz bytes. Values
// come from small domains so that different contexts often share a cache
// key, which is when property 1 has something to check.
type ruleGen struct {
	b []byte
	i int
}

func (g *ruleGen) next() int {
	if g.i >= len(g.b) {
		return 0
	}
	v := g.b[g.i]
	g.i++
	return int(v)
}

func (g *ruleGen) pick(n int) int { return g.next() % n }

var (
	genAttrs    = []string{"plan", "country", "age", "tags", "user.name", "targetingKey", "items", "email", "version", "n"}
	genVariants = []any{"red", "green", "blue", "true", "false", "1", true, false, 1.0, nil}
	genConsts   = []any{nil, true, false, 0.0, 1.0, 18.0, 17.5, -1.0, "", "premium", "free", "SE", "18", "user-1", "1.2.3", "2.0.0", "a@example.com", "x"}
)

func (g *ruleGen) constant() any { return genConsts[g.pick(len(genConsts))] }

func (g *ruleGen) varRef() any {
	a := genAttrs[g.pick(len(genAttrs))]
	switch g.pick(4) {
	case 0:
		return map[string]any{"var": []any{a, g.constant()}} // with a default
	case 1:
		if g.pick(4) == 0 {
			// a computed path: uncacheable at the top level
			return map[string]any{"var": map[string]any{"cat": []any{"pl", "an"}}}
		}
	}
	return map[string]any{"var": a}
}

// scoped is a predicate over one element of an array (map/filter/some/...).
func (g *ruleGen) scoped() any {
	name := any(map[string]any{"var": "name"})
	if g.pick(2) == 0 {
		name = map[string]any{"var": map[string]any{"cat": []any{"na", "me"}}} // computed path on the element
	}
	switch g.pick(3) {
	case 0:
		return map[string]any{"==": []any{name, g.constant()}}
	case 1:
		return map[string]any{"in": []any{name, []any{"x", "y"}}}
	}
	return map[string]any{"!": name}
}

func (g *ruleGen) expr(depth int) any {
	if depth <= 0 {
		if g.pick(2) == 0 {
			return g.constant()
		}
		return g.varRef()
	}
	d := depth - 1
	op := func(name string, args ...any) any { return map[string]any{name: args} }
	switch g.pick(24) {
	case 0:
		return g.constant()
	case 1, 2:
		return g.varRef()
	case 3:
		return op("==", g.expr(d), g.expr(d))
	case 4:
		return op("!=", g.expr(d), g.expr(d))
	case 5:
		return op("<", g.expr(d), g.expr(d))
	case 6:
		return op(">=", g.expr(d), g.expr(d))
	case 7:
		return op("<=", g.expr(d), g.expr(d), g.expr(d))
	case 8:
		return op("in", g.expr(d), []any{"SE", "US", "premium", 18.0})
	case 9:
		return op("and", g.expr(d), g.expr(d))
	case 10:
		return op("or", g.expr(d), g.expr(d))
	case 11:
		return map[string]any{"!": g.expr(d)}
	case 12:
		return op("if", g.expr(d), g.expr(d), g.expr(d))
	case 13:
		return op([]string{"+", "-", "*", "/", "%"}[g.pick(5)], g.expr(d), g.expr(d))
	case 14:
		return op("cat", g.expr(d), g.expr(d))
	case 15:
		return op([]string{"starts_with", "ends_with"}[g.pick(2)], g.expr(d), "a")
	case 16:
		return op("sem_ver", g.expr(d), []string{"=", ">=", "<", "^", "~"}[g.pick(5)], "1.2.3")
	case 17:
		return op("missing", "plan", "age")
	case 18:
		return op("missing_some", 1.0, []any{"plan", "user.name"})
	case 19:
		return op([]string{"some", "all", "none", "filter"}[g.pick(4)], map[string]any{"var": "items"}, g.scoped())
	case 20:
		return op("map", map[string]any{"var": "items"}, map[string]any{"var": map[string]any{"cat": []any{"na", "me"}}})
	case 21:
		return op("reduce", map[string]any{"var": "tags"}, op("cat", map[string]any{"var": "accumulator"}, map[string]any{"var": "current"}), "")
	case 22:
		return op("substr", g.expr(d), 1.0)
	}
	return g.fractional(d)
}

func (g *ruleGen) fractional(depth int) any {
	var a []any
	switch g.pick(4) {
	case 0: // shorthand: flagKey + targetingKey
	case 1:
		a = append(a, map[string]any{"var": "email"})
	case 2:
		a = append(a, map[string]any{"cat": []any{map[string]any{"var": "$flagd.flagKey"}, map[string]any{"var": "user.name"}}})
	default:
		a = append(a, g.expr(depth))
	}
	n := 1 + g.pick(20) // past 16 buckets too
	for range n {
		name := genVariants[g.pick(len(genVariants))]
		switch g.pick(6) {
		case 0:
			a = append(a, []any{name})
		case 1:
			a = append(a, []any{name, g.expr(depth)}) // computed weight
		default:
			a = append(a, []any{name, float64(g.pick(60) - 5)})
		}
	}
	return map[string]any{"fractional": a}
}

// targeting is the whole rule of the generated flag.
func (g *ruleGen) targeting() any {
	branch := func() any {
		if g.pick(3) == 0 {
			return g.fractional(1)
		}
		return genVariants[g.pick(len(genVariants))]
	}
	return map[string]any{"if": []any{g.expr(3), branch(), branch()}}
}

func (g *ruleGen) value(depth int) any {
	switch k := g.pick(8); {
	case k < 5 || depth <= 0:
		return g.constant()
	case k == 5:
		return []any{g.constant(), g.constant()}
	case k == 6:
		return []any{map[string]any{"name": g.constant()}, map[string]any{"name": g.constant()}}
	default:
		return map[string]any{"name": g.constant()}
	}
}

func (g *ruleGen) context() map[string]any {
	m := map[string]any{}
	for _, a := range genAttrs {
		if g.pick(3) == 0 {
			continue
		}
		switch a {
		case "user.name":
			if g.pick(3) == 0 {
				m["user.name"] = g.constant() // a literal dotted key next to the object
			}
			m["user"] = map[string]any{"name": g.constant()}
		case "items":
			m["items"] = g.value(2)
		default:
			m[a] = g.value(1)
		}
	}
	return m
}

// cacheDiff holds a caching and a non-caching server over one Holder. Each
// check stores a new snapshot at a new version, so cache entries of earlier
// checks can never be hit.
type cacheDiff struct {
	h         evaluator.Holder
	cached    *Server
	uncached  *Server
	ch, uh    fasthttp.RequestHandler
	version   atomic.Uint64
	cacheHits int
	// what the checks exercised: rules served, rules the evaluator rejected,
	// flag/context pairs with equal cache keys
	served, rejected, equalKeys int
}

func newCacheDiff(tb testing.TB) *cacheDiff {
	tb.Helper()
	d := &cacheDiff{}
	var err error
	if d.cached, err = New(Options{Addr: "127.0.0.1:0", Source: &d.h, CacheBytes: 4 << 20, CacheMinCost: -1}); err != nil {
		tb.Fatal(err)
	}
	if d.uncached, err = New(Options{Addr: "127.0.0.1:0", Source: &d.h, CacheBytes: -1}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.cached.cache.Close() })
	d.ch, d.uh = d.cached.Handler(), d.uncached.Handler()
	return d
}

// check runs both properties for flags "f" (targeting rule) and "g" (which
// has "f" = red as a prerequisite) and contexts a and b.
func (d *cacheDiff) check(t *testing.T, rule any, a, b map[string]any) {
	t.Helper()
	ruleJSON, err := json.Marshal(rule)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(ruleJSON))
	dec.UseNumber()
	var targeting any
	if err := dec.Decode(&targeting); err != nil {
		t.Fatal(err)
	}
	variants := []evaluator.VariantSpec{{Name: "red", Value: "r"}, {Name: "green", Value: "g"}, {Name: "blue", Value: "b"},
		{Name: "true", Value: "t"}, {Name: "false", Value: "f"}, {Name: "1", Value: "one"}}
	specs := []evaluator.FlagSpec{
		{Key: "f", Variants: variants, DefaultVariant: "blue", HasDefaultVariant: true, Targeting: targeting},
		{Key: "g", Variants: variants, DefaultVariant: "green", HasDefaultVariant: true, Prerequisites: map[string]string{"f": "red"},
			Targeting: map[string]any{"if": []any{map[string]any{"==": []any{map[string]any{"var": "plan"}, "premium"}}, "red", "1"}}},
	}
	snap, problems := evaluator.NewSnapshot(d.version.Add(1), specs, evaluator.SnapshotOptions{})
	if problems != nil {
		d.rejected++
		return // the generator can write rules the evaluator rejects at load; nothing to serve
	}
	d.served++
	d.h.Store(snap)
	bodies := [][]byte{contextBody(t, a), contextBody(t, b)}
	for _, key := range []string{"f", "g"} {
		f := snap.Flag(key)
		var keys [2][]byte
		var oks [2]bool
		var want [2][]byte
		for i, body := range bodies {
			ec := evaluator.NewContext()
			if err := ec.DecodeField(body, "context", evaluator.Limits{}); err != nil {
				t.Fatalf("generated context %s does not decode: %v", body, err)
			}
			keys[i], oks[i] = f.AppendCacheKey(nil, ec)
			r := snap.EvaluateFlag(f, ec)
			want[i] = appendResult(nil, &r)
		}
		// Property 1: equal cache keys, equal answers.
		if oks[0] && oks[1] && bytes.Equal(keys[0], keys[1]) {
			d.equalKeys++
		}
		if oks[0] && oks[1] && bytes.Equal(keys[0], keys[1]) && !bytes.Equal(want[0], want[1]) {
			t.Fatalf("flag %s, rule %s: contexts %s and %s share cache key %q but answer\n%s\n%s",
				key, ruleJSON, bodies[0], bodies[1], keys[0], want[0], want[1])
		}
		// Property 2: the caching handler answers what the evaluator does.
		// a, b, a, b: the second round can hit entries the first stored.
		for round := range 2 {
			for i, body := range bodies {
				got, status := serve(d.ch, key, body)
				d.cached.cache.Wait()
				plain, plainStatus := serve(d.uh, key, body)
				if !bytes.Equal(got, plain) || status != plainStatus {
					t.Fatalf("flag %s, rule %s, context %s (round %d): cached handler answered %d %s, uncached %d %s",
						key, ruleJSON, body, round, status, got, plainStatus, plain)
				}
				if !bytes.Equal(got, want[i]) {
					t.Fatalf("flag %s, rule %s, context %s: handler answered %s, evaluator %s", key, ruleJSON, body, got, want[i])
				}
			}
		}
	}
	d.cacheHits = int(d.cached.cache.Metrics.Hits())
}

func contextBody(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"context": m})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serve(h fasthttp.RequestHandler, key string, body []byte) ([]byte, int) {
	var ctx fasthttp.RequestCtx
	request(&ctx, "POST", "/ofrep/v1/evaluate/flags/"+key, body)
	h(&ctx)
	return append([]byte(nil), ctx.Response.Body()...), ctx.Response.StatusCode()
}

func FuzzCacheDifferential(f *testing.F) {
	r := rand.New(rand.NewPCG(12, 2026))
	for range 64 {
		seed := make([]byte, 48+r.IntN(200))
		for i := range seed {
			seed[i] = byte(r.Uint32())
		}
		f.Add(seed)
	}
	d := newCacheDiff(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &ruleGen{b: data}
		rule := g.targeting()
		a, b := g.context(), g.context()
		if g.pick(2) == 0 {
			// Same attributes the rule reads, other noise: equal keys are likely.
			for k, v := range a {
				if _, ok := b[k]; !ok {
					b[k] = v
				}
			}
		}
		d.check(t, rule, a, b)
	})
}

// TestCacheDifferentialCases runs the two properties on cases that broke
// them before: a computed var path inside an iteration read the root
// context; a literal "user.name" key was preferred over user.name in the
// cache key; a fractional whose bucketing attribute is missing falls back to
// the targeting key (which the key must therefore cover).
func TestCacheDifferentialCases(t *testing.T) {
	d := newCacheDiff(t)
	computed := map[string]any{"var": map[string]any{"cat": []any{"na", "me"}}}
	tests := []struct {
		name string
		rule string
		a, b map[string]any
	}{
		{"computed var inside some",
			`{"if": [{"some": [{"var": "items"}, {"==": [` + mustJSON(t, computed) + `, "x"]}]}, "red", "green"]}`,
			map[string]any{"name": "x", "items": []any{map[string]any{"name": "z"}}},
			map[string]any{"name": "z", "items": []any{map[string]any{"name": "z"}}}},
		{"literal dotted key next to the object",
			`{"if": [{"==": [{"var": "user.name"}, "x"]}, "red", "green"]}`,
			map[string]any{"user.name": "x", "user": map[string]any{"name": "x"}},
			map[string]any{"user.name": "x", "user": map[string]any{"name": "y"}}},
		{"fractional with a missing bucketing attribute",
			`{"fractional": [{"var": "email"}, ["red", 50], ["green", 50]]}`,
			map[string]any{"targetingKey": "user-1"},
			map[string]any{"targetingKey": "user-2"}},
		{"fractional past 16 buckets with a computed weight",
			`{"fractional": [["red", {"+": [1, 0]}], ["green"], ["blue"], ["red"], ["green"], ["blue"], ["red"], ["green"], ["blue"], ["red"], ["green"], ["blue"], ["red"], ["green"], ["blue"], ["red"], ["green"], ["blue", 5], ["1", 9]]}`,
			map[string]any{"targetingKey": "user-1"},
			map[string]any{"targetingKey": "user-7"}},
		{"arithmetic on a missing attribute",
			`{"if": [{">": [{"+": [{"var": "age"}, 1]}, 18]}, "red", "green"]}`,
			map[string]any{"plan": "x"},
			map[string]any{"age": 20.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rule any
			if err := json.Unmarshal([]byte(tt.rule), &rule); err != nil {
				t.Fatal(err)
			}
			d.check(t, rule, tt.a, tt.b)
		})
	}
	// A loop of generated cases as well, so the seed corpus is not the only
	// generated input a plain `go test` sees.
	r := rand.New(rand.NewPCG(7, 12))
	for range 300 {
		data := make([]byte, 64+r.IntN(256))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		g := &ruleGen{b: data}
		d.check(t, g.targeting(), g.context(), g.context())
	}
	t.Logf("served %d generated rules (%d rejected at load), %d flag/context pairs with equal cache keys, %d cache hits",
		d.served, d.rejected, d.equalKeys, d.cacheHits)
	if d.cacheHits == 0 {
		t.Error("the response cache was never hit: property 2 compared nothing cached")
	}
	if d.equalKeys < 20 || d.served < 100 {
		t.Error("the generator hardly exercised the properties; make its domains smaller")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
