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
