package config

import (
	"os"
	"testing"
)

// FuzzDiffAndGraph checks, for any two valid documents, that a document does
// not differ from itself, that diffing is symmetric (added ↔ removed), that
// the text form renders, and that the prerequisite graph agrees with itself
// in both directions.
func FuzzDiffAndGraph(f *testing.F) {
	checkout, _ := os.ReadFile("../examples/checkout.json")
	basic, _ := os.ReadFile("../examples/basic.json")
	f.Add(checkout, basic)
	f.Add(basic, checkout)
	f.Add([]byte(`{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},"b":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","prerequisites":{"a":"on"}}}}`),
		[]byte(`{"flags":{"a":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`))
	f.Fuzz(func(t *testing.T, ja, jb []byte) {
		a, err := Parse(ja)
		if err != nil {
			return
		}
		b, err := Parse(jb)
		if err != nil {
			return
		}
		if d := DiffDocuments(a, a, nil); len(d) != 0 {
			t.Fatalf("a document differs from itself: %+v", d)
		}
		ab, ba := DiffDocuments(a, b, nil), DiffDocuments(b, a, nil)
		if len(ab) != len(ba) {
			t.Fatalf("asymmetric diff: %d vs %d flags", len(ab), len(ba))
		}
		swap := map[string]string{"added": "removed", "removed": "added", "changed": "changed"}
		for i := range ab {
			if ab[i].Flag != ba[i].Flag || swap[ab[i].Change] != ba[i].Change {
				t.Fatalf("asymmetric diff at %s: %s vs %s", ab[i].Flag, ab[i].Change, ba[i].Change)
			}
		}
		_ = (&Diff{Flags: ab}).Text()
		g := NewGraph(a)
		for _, k := range a.FlagKeys() {
			for _, dep := range g.Dependents(k) {
				if !hasString(g.Prerequisites(dep), k) {
					t.Fatalf("%s depends on %s, but %s is not among its prerequisites", dep, k, k)
				}
			}
		}
	})
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
