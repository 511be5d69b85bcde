package cowmap

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestEditMatchesPlainMap applies random edits to a chain of maps and
// checks every version against a plain Go map edited the same way: an edit
// must never show through to the map it was derived from.
func TestEditMatchesPlainMap(t *testing.T) {
	for _, size := range []int{0, 1, 40, 1000, 5000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(size), 7))
			m := New[int](size)
			want := map[string]int{}
			for i := range size {
				k := "k" + strconv.Itoa(i)
				m.Set(k, i)
				want[k] = i
			}
			type version struct {
				m    *Map[int]
				want map[string]int
			}
			versions := []version{{m, maps.Clone(want)}}
			for step := range 200 {
				cur := versions[len(versions)-1]
				next := maps.Clone(cur.want)
				edited := cur.m.Edit(func(e *Editor[int]) {
					for range rng.IntN(4) + 1 {
						k := "k" + strconv.Itoa(rng.IntN(size+50))
						if rng.IntN(3) == 0 {
							_, had := next[k]
							if got := e.Delete(k); got != had {
								t.Fatalf("step %d: Delete(%s) = %v, want %v", step, k, got, had)
							}
							delete(next, k)
						} else {
							e.Set(k, step)
							next[k] = step
						}
					}
				})
				versions = append(versions, version{edited, next})
			}
			for i, v := range versions {
				if v.m.Len() != len(v.want) {
					t.Fatalf("version %d: Len %d, want %d", i, v.m.Len(), len(v.want))
				}
				got := maps.Collect(v.m.All())
				if !maps.Equal(got, v.want) {
					t.Fatalf("version %d: contents differ from the plain map", i)
				}
				for k, x := range v.want {
					if y, ok := v.m.Get(k); !ok || y != x {
						t.Fatalf("version %d: Get(%s) = %d, %v; want %d", i, k, y, ok, x)
					}
				}
			}
		})
	}
}

func TestEditGrowsShards(t *testing.T) {
	m := New[int](0)
	for i := range 5000 {
		k := strconv.Itoa(i)
		m = m.Edit(func(e *Editor[int]) { e.Set(k, i) })
	}
	if m.mask+1 < 16 {
		t.Fatalf("5000 entries kept in %d shards: the table never grew", m.mask+1)
	}
	if v, ok := m.Get("4999"); !ok || v != 4999 {
		t.Fatalf("Get(4999) = %d, %v after growing", v, ok)
	}
}

func TestEditSorted(t *testing.T) {
	base := []string{"a", "c", "e"}
	cases := []struct {
		name           string
		added, removed []string
		want           []string
	}{
		{"nothing", nil, nil, []string{"a", "c", "e"}},
		{"existing key re-added", []string{"c"}, nil, []string{"a", "c", "e"}},
		{"add in the middle and at the ends", []string{"d", "0", "z", "d"}, nil, []string{"0", "a", "c", "d", "e", "z"}},
		{"remove", nil, []string{"a", "e", "x"}, []string{"c"}},
		{"remove and re-add is a replace", []string{"c"}, []string{"c"}, []string{"a", "c", "e"}},
		{"add and remove", []string{"b"}, []string{"c"}, []string{"a", "b", "e"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := EditSorted(base, tc.added, tc.removed)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if !slices.Equal(base, []string{"a", "c", "e"}) {
				t.Fatalf("input modified: %v", base)
			}
		})
	}
}
