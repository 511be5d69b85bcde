package evaluator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestVariantSet(t *testing.T) {
	for _, n := range []int{0, 1, 3, linearVariants, linearVariants + 1, 40} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var vs variantSet
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("v%02d", i)
			}
			for _, i := range rand.Perm(n) {
				vs.put(&variant{name: names[i], value: "first"})
			}
			for _, i := range rand.Perm(n) { // replaced, not added
				vs.put(&variant{name: names[i], value: names[i]})
			}
			if len(vs) != n {
				t.Fatalf("%d variants after putting %d names twice", len(vs), n)
			}
			got := make([]string, len(vs))
			for i, v := range vs {
				got[i] = v.name
			}
			if !slices.IsSorted(got) {
				t.Fatalf("not in name order: %v", got)
			}
			for _, name := range names {
				if v := vs.get(name); v == nil || v.value != name {
					t.Fatalf("get(%q) = %+v", name, v)
				}
			}
			for _, missing := range []string{"", "v", "v000", "zz", "V01"} {
				if v := vs.get(missing); v != nil {
					t.Fatalf("get(%q) = %+v, want nil", missing, v)
				}
			}
		})
	}
}
