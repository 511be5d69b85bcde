package evaluator

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// chain is c → b → a (c requires b, b requires a); a reads nothing.
func chain() []FlagSpec {
	boolean := []VariantSpec{{Name: "on", Value: true}, {Name: "off", Value: false}}
	return []FlagSpec{
		{Key: "a", Variants: boolean, DefaultVariant: "on", HasDefaultVariant: true},
		{Key: "b", Variants: boolean, DefaultVariant: "on", HasDefaultVariant: true, Prerequisites: map[string]string{"a": "on"}},
		{Key: "c", Variants: boolean, DefaultVariant: "on", HasDefaultVariant: true, Prerequisites: map[string]string{"b": "on"}},
		{Key: "d", Variants: boolean, DefaultVariant: "off", HasDefaultVariant: true},
	}
}

func TestUpdate(t *testing.T) {
	boolean := []VariantSpec{{Name: "on", Value: true}, {Name: "off", Value: false}}
	// a answers "on" only for @pennon.dev addresses.
	aTargeted := FlagSpec{Key: "a", Variants: boolean, DefaultVariant: "off", HasDefaultVariant: true,
		Targeting: map[string]any{"if": []any{map[string]any{"ends_with": []any{map[string]any{"var": "email"}, "@pennon.dev"}}, "on", "off"}}}
	tests := []struct {
		name     string
		put      []FlagSpec
		del      []string
		problems []Problem
		keys     []string
		// for each flag: its reads and its answer for an outside address
		reads   map[string][]string
		variant map[string]string
	}{
		{
			name: "a rule change reaches dependents two levels up",
			put:  []FlagSpec{aTargeted},
			keys: []string{"a", "b", "c", "d"},
			reads: map[string][]string{
				"a": {"email"}, "b": {"email"}, "c": {"email"}, "d": nil,
			},
			variant: map[string]string{"a": "off", "b": "on", "c": "on", "d": "off"},
		},
		{
			name:     "deleting a prerequisite is refused as a full build refuses it",
			del:      []string{"a"},
			problems: []Problem{{Path: "flags.b.prerequisites.a", Reason: `prerequisite flag "a" does not exist`}},
		},
		{
			name: "a put that closes a cycle names it from its smallest key",
			put: []FlagSpec{{Key: "a", Variants: boolean, DefaultVariant: "on", HasDefaultVariant: true,
				Prerequisites: map[string]string{"c": "on"}}},
			problems: []Problem{{Path: "flags.a.prerequisites", Reason: "cycle a → c → b → a"}},
		},
		{
			name:     "removing a required variant",
			put:      []FlagSpec{{Key: "b", Variants: []VariantSpec{{Name: "yes", Value: true}}, Prerequisites: map[string]string{"a": "on"}}},
			problems: []Problem{{Path: "flags.c.prerequisites.b", Reason: `"on" is not a variant of b (have: yes)`}},
		},
		{
			name:  "add and delete change the keys",
			put:   []FlagSpec{{Key: "e", Variants: boolean, DefaultVariant: "on", HasDefaultVariant: true, Prerequisites: map[string]string{"d": "on"}}},
			del:   []string{"c"},
			keys:  []string{"a", "b", "d", "e"},
			reads: map[string][]string{"a": nil, "b": nil, "d": nil, "e": nil},
			// e's prerequisite d answers off: e falls back to its default.
			variant: map[string]string{"a": "on", "b": "on", "d": "off", "e": "on"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, ps := NewSnapshot(1, chain(), SnapshotOptions{})
			if ps != nil {
				t.Fatal(ps)
			}
			before := map[string][]string{}
			for _, k := range base.Keys() {
				before[k] = slices.Clone(base.Flag(k).Reads())
			}
			next, ps := base.Update(2, tc.put, tc.del)
			if tc.problems != nil {
				if next != nil || !reflect.DeepEqual(ps, tc.problems) {
					t.Fatalf("problems %v, want %v", ps, tc.problems)
				}
				return
			}
			if ps != nil {
				t.Fatalf("problems: %v", ps)
			}
			if next.Version() != 2 || !slices.Equal(next.Keys(), tc.keys) || next.Len() != len(tc.keys) {
				t.Fatalf("version %d keys %v, want 2 %v", next.Version(), next.Keys(), tc.keys)
			}
			ctx := ContextFromMap(map[string]any{"email": "x@example.com"})
			for k, want := range tc.reads {
				if got := next.Flag(k).Reads(); !slices.Equal(got, want) {
					t.Errorf("%s reads %v, want %v", k, got, want)
				}
				if r := next.Evaluate(k, ctx); r.Variant != tc.variant[k] {
					t.Errorf("%s answers %q, want %q", k, r.Variant, tc.variant[k])
				}
			}
			// The snapshot updated from is never modified.
			for _, k := range base.Keys() {
				if got := base.Flag(k).Reads(); !slices.Equal(got, before[k]) {
					t.Errorf("base %s reads changed to %v", k, got)
				}
				if r := base.Evaluate(k, ctx); r.Variant != map[string]string{"a": "on", "b": "on", "c": "on", "d": "off"}[k] {
					t.Errorf("base %s now answers %q", k, r.Variant)
				}
			}
			// Flags the change does not reach are shared, not copied.
			if tc.put != nil && tc.put[0].Key == "a" && next.Flag("d") != base.Flag("d") {
				t.Error("d was rebuilt although nothing it needs changed")
			}
		})
	}
}

// BenchmarkFlagLookup is the cost of finding a flag by key in a 100,000-flag
// snapshot (the copy-on-write table hashes to a shard, then the shard's map).
func BenchmarkFlagLookup(b *testing.B) {
	specs := make([]FlagSpec, 100000)
	for i := range specs {
		specs[i] = FlagSpec{Key: fmt.Sprintf("flag-%d", i), Variants: []VariantSpec{{Name: "on", Value: true}}}
	}
	s, ps := NewSnapshot(1, specs, SnapshotOptions{})
	if ps != nil {
		b.Fatal(ps)
	}
	b.ReportAllocs()
	for b.Loop() {
		if s.Flag("flag-4242") == nil {
			b.Fatal("missing")
		}
	}
}
