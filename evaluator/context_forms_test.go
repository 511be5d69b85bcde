package evaluator

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// padded returns js (an object) with n more members that no rule below
// reads, so a context of a few members is pushed past flatMax into its map
// form.
func padded(js string, n int) string {
	var b strings.Builder
	b.WriteString(`{`)
	for i := range n {
		fmt.Fprintf(&b, `"pad%02d":%d,`, i, i)
	}
	return b.String() + strings.TrimPrefix(js, "{")
}

// checkTopLevel checks every top-level read of c (get, lookupPath,
// TargetingKey, Map) against want, encoding/json's map of the same JSON,
// before and after Map() builds its copy.
func checkTopLevel(t *testing.T, c *Context, want map[string]any) {
	t.Helper()
	for _, when := range []string{"before Map()", "after Map()"} {
		for k, w := range want {
			if v, ok := c.get(k); !ok || !reflect.DeepEqual(v, w) {
				t.Errorf("%s: get(%q) = %#v, %v; want %#v", when, k, v, ok, w)
			}
			if v := c.lookupPath(k); !strings.Contains(k, ".") && !reflect.DeepEqual(v, w) {
				t.Errorf("%s: lookupPath(%q) = %#v, want %#v", when, k, v, w)
			}
		}
		if v, ok := c.get("absent"); ok || v != nil {
			t.Errorf("%s: get(absent) = %#v, %v", when, v, ok)
		}
		tk, ok := c.TargetingKey()
		wantTK, wantOK := want["targetingKey"].(string)
		if tk != wantTK || ok != wantOK {
			t.Errorf("%s: TargetingKey() = %q, %v; want %q, %v", when, tk, ok, wantTK, wantOK)
		}
		if got := c.Map(); !reflect.DeepEqual(got, want) {
			t.Fatalf("Map() = %#v\nwant %#v", got, want)
		}
	}
}

// TestLookupPathDotted: a dotted path walks nested values, as a compiled
// var reads it, and "" is the member named "" (not the whole context).
func TestLookupPathDotted(t *testing.T) {
	c := ctxOf(t, `{"a.b":"literal","a":{"b":"nested"},"":"empty key"}`)
	if got := c.lookupPath("a.b"); got != "nested" {
		t.Errorf(`lookupPath("a.b") = %#v, want the nested "nested" as a compiled var reads it`, got)
	}
	if got := c.lookupPath(""); got != "empty key" {
		t.Errorf(`lookupPath("") = %#v, want the member named ""`, got)
	}
}

// TestContextFromMapForms: ContextFromMap gives the same reads as a decode,
// below and above flatMax.
func TestContextFromMapForms(t *testing.T) {
	for _, n := range []int{0, 3, flatMax, flatMax + 1, 100} {
		m := map[string]any{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = json.Number(fmt.Sprint(i))
		}
		m["targetingKey"] = "tk"
		c := ContextFromMap(m)
		for i := range n {
			if v, _ := c.get(fmt.Sprintf("k%d", i)); v != float64(i) {
				t.Errorf("n=%d: k%d = %#v, want %v", n, i, v, float64(i))
			}
		}
		if tk, ok := c.TargetingKey(); tk != "tk" || !ok {
			t.Errorf("n=%d: TargetingKey() = %q, %v", n, tk, ok)
		}
		if got := len(c.Map()); got != n+1 {
			t.Errorf("n=%d: Map() has %d members", n, got)
		}
	}
}

// TestDecodeFieldTopLevel: a repeated context member replaces the earlier
// one in either form, and ValidateField leaves the context empty.
func TestDecodeFieldTopLevel(t *testing.T) {
	c := NewContext()
	for _, tc := range []struct {
		name, body string
		want       map[string]any
	}{
		{"last member wins", `{"context":{"a":1,"b":2},"CONTEXT":{"c":"three"}}`, map[string]any{"c": "three"}},
		{"map form then flat", `{"context":` + padded(`{"a":1}`, 20) + `,"context":{"b":2}}`, map[string]any{"b": 2.0}},
		{"flat then null keeps nothing", `{"context":{"a":1},"context":null}`, map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Map() // a built copy from the previous decode must not leak into this one
			if err := c.DecodeField([]byte(tc.body), "context", Limits{}); err != nil {
				t.Fatal(err)
			}
			if got := c.Map(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Map() = %#v, want %#v", got, tc.want)
			}
		})
	}
	if err := c.ValidateField([]byte(`{"context":{"a":1,"b":{"c":2}}}`), "context", Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := c.Map(); len(got) != 0 {
		t.Fatalf("ValidateField left %#v", got)
	}
}

// TestContextFormsAnswerAlike runs compiled expressions over the same
// context in its flat form and, padded with unread members, in its map
// form: every var read, missing, computed path, iteration and fractional
// bucket must see the same values, and cache keys must be equal.
func TestContextFormsAnswerAlike(t *testing.T) {
	const base = `{"targetingKey":"user-8f14e45f","plan":"premium","age":33,"device":{"os":"ios"},"tags":["a","b"],"a.b":"literal","":"empty"}`
	flat, wide := ctxOf(t, base), ctxOf(t, padded(base, 30))
	if flat.large || !wide.large {
		t.Fatalf("forms: flat.large=%v wide.large=%v", flat.large, wide.large)
	}
	for _, tc := range []struct {
		name, rule string
		want       any
	}{
		{"var", `{"var":"plan"}`, "premium"},
		{"var number", `{"var":"age"}`, 33.0},
		{"var absent", `{"var":"nope"}`, nil},
		{"var absent with default", `{"var":["nope","dflt"]}`, "dflt"},
		{"dotted var", `{"var":"device.os"}`, "ios"},
		{"dotted var walks, not the literal key", `{"var":"a.b"}`, nil},
		{"array index", `{"var":"tags.1"}`, "b"},
		{"computed path", `{"var":{"cat":["dev","ice.os"]}}`, "ios"},
		{"computed empty path is the whole context", `{"var":{"cat":[""]}}`, "whole"},
		{"missing", `{"missing":["plan","nope","device.os","device.x"]}`, []any{"nope", "device.x"}},
		{"missing_some", `{"missing_some":[3,["plan","nope","age"]]}`, []any{"nope"}},
		{"map over tags", `{"map":[{"var":"tags"},{"cat":[{"var":""},"!"]}]}`, []any{"a!", "b!"}},
		{"some over tags", `{"some":[{"var":"tags"},{"==":[{"var":""},"b"]}]}`, true},
		{"fractional by targetingKey", `{"fractional":[["red",50],["green",50]]}`, "fractional"},
		{"in", `{"in":[{"var":"plan"},["basic","premium"]]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rule any
			if err := json.Unmarshal([]byte(tc.rule), &rule); err != nil {
				t.Fatal(err)
			}
			cc := newCompiler("f")
			n := cc.compile(normalize(rule), "")
			if len(cc.problems) > 0 {
				t.Fatalf("compile: %v", cc.problems)
			}
			run := func(c *Context) any {
				e := &env{root: c, flagKey: "f", now: time.Now}
				return n(e)
			}
			got, gotWide := run(flat), run(wide)
			switch tc.want {
			case "whole":
				if !reflect.DeepEqual(got, flat.Map()) || !reflect.DeepEqual(gotWide, wide.Map()) {
					t.Fatalf("whole context: %#v / %#v", got, gotWide)
				}
				return
			case "fractional":
				if got != "red" && got != "green" {
					t.Fatalf("fractional gave %#v", got)
				}
			default:
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("flat form: %#v, want %#v", got, tc.want)
				}
			}
			if !reflect.DeepEqual(got, gotWide) {
				t.Fatalf("flat form %#v, map form %#v", got, gotWide)
			}
		})
	}
	s := snap(t, map[string]string{"f": rule(`{"if":[{"and":[{"==":[{"var":"plan"},"premium"]},{"==":[{"var":"device.os"},"ios"]},{"missing":["a.b",""]}]},"red","green"]}`)})
	f := s.Flag("f")
	k1, ok1 := f.AppendCacheKey(nil, flat)
	k2, ok2 := f.AppendCacheKey(nil, wide)
	if !ok1 || !ok2 || string(k1) != string(k2) || !strings.Contains(string(k1), "s7:premium") {
		t.Fatalf("cache keys: %q (%v) vs %q (%v)", k1, ok1, k2, ok2)
	}
	paths := []string{"plan", "device.os", "tags", "nope", "", "a.b"}
	v1, v2 := flat.AppendValues(nil, paths), wide.AppendValues(nil, paths)
	if string(v1) != string(v2) || !strings.Contains(string(v1), "s5:empty") {
		t.Fatalf("AppendValues: %q vs %q", v1, v2)
	}
	if r1, r2 := s.EvaluateFlag(f, flat), s.EvaluateFlag(f, wide); r1.Variant != "red" || r1.Variant != r2.Variant || r1.Reason != r2.Reason {
		t.Fatalf("answers: %+v vs %+v", r1, r2)
	}
}

// TestDecodeContextIntegers: integers of up to 15 digits skip strconv; each
// must decode to exactly the float64 ParseFloat gives, bit for bit (the
// sign of zero included), on both sides of the 15-digit and smallInts
// boundaries.
func TestDecodeContextIntegers(t *testing.T) {
	c := NewContext()
	for _, text := range []string{"0", "-0", "7", "-7", "255", "256", "-255", "1000", "123456789012345", "-123456789012345",
		"999999999999999", "1000000000000000", "-1000000000000000", "9007199254740993", "12345678901234567890", "0.5", "-0.0", "1e3", "255.0"} {
		if err := c.Decode([]byte(`{"n":`+text+`}`), Limits{}); err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		want, err := strconv.ParseFloat(text, 64)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := c.Map()["n"].(float64)
		if !ok || math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("%s decoded as %#v (bits %x), want %v (bits %x)", text, c.Map()["n"], math.Float64bits(got), want, math.Float64bits(want))
		}
	}
}
