package cowmap

import (
	"slices"
	"sort"
)

// EditSorted returns keys (sorted, unique) without the keys in removed and
// with the keys in added, still sorted and unique. keys is never modified;
// when nothing changes it is returned as is, so a snapshot whose key set did
// not change shares its key list with the one before. The cost is one copy
// of keys: a memmove, not a sort of the whole set.
func EditSorted(keys, added, removed []string) []string {
	var add []string
	for _, k := range added {
		if _, found := slices.BinarySearch(keys, k); !found {
			add = append(add, k)
		}
	}
	readded := make(map[string]bool, len(added))
	for _, k := range added {
		readded[k] = true
	}
	var del []string
	for _, k := range removed {
		if _, found := slices.BinarySearch(keys, k); found && !readded[k] {
			del = append(del, k)
		}
	}
	if len(add) == 0 && len(del) == 0 {
		return keys
	}
	sort.Strings(add)
	add = slices.Compact(add)
	sort.Strings(del)
	del = slices.Compact(del)
	out := make([]string, 0, len(keys)+len(add)-len(del))
	i, j := 0, 0
	for i < len(keys) || j < len(add) {
		switch {
		case j == len(add) || i < len(keys) && keys[i] < add[j]:
			if _, gone := slices.BinarySearch(del, keys[i]); !gone {
				out = append(out, keys[i])
			}
			i++
		default:
			out = append(out, add[j])
			j++
		}
	}
	return out
}

// EditIndex returns a reverse index (target → sorted sources) with the
// edges in drop removed and those in add inserted; both map a source to its
// targets. idx is never modified: only the lists an edge touches are
// copied, and lists left empty are removed.
func EditIndex(idx *Map[[]string], drop, add map[string][]string) *Map[[]string] {
	return idx.Edit(func(e *Editor[[]string]) {
		touched := map[string]bool{}
		edit := func(target, source string, insert bool) {
			l, _ := e.Get(target)
			if !touched[target] {
				l = slices.Clone(l)
				touched[target] = true
			}
			i, found := slices.BinarySearch(l, source)
			switch {
			case insert && !found:
				l = slices.Insert(l, i, source)
			case !insert && found:
				l = slices.Delete(l, i, i+1)
			}
			e.Set(target, l)
		}
		for source, targets := range drop {
			for _, t := range targets {
				edit(t, source, false)
			}
		}
		for source, targets := range add {
			for _, t := range targets {
				edit(t, source, true)
			}
		}
		for k := range touched {
			if l, _ := e.Get(k); len(l) == 0 {
				e.Delete(k)
			}
		}
	})
}

// Index builds a reverse index from edges (source → targets), every list
// sorted.
func Index(edges map[string][]string) *Map[[]string] {
	idx := New[[]string](len(edges))
	for source, targets := range edges {
		for _, t := range targets {
			l, _ := idx.Get(t)
			idx.Set(t, append(l, source))
		}
	}
	for _, l := range idx.All() {
		sort.Strings(l)
	}
	return idx
}
