package evaluator

import "sort"

// variantSet is a flag's variants sorted by name. A flag has a handful of
// variants: a map per compiled flag cost ~300 bytes (a whole map group) to
// hold two or three pointers, 30 MB at 100,000 flags, and finding a name
// among a few by comparing strings is as fast as hashing it.
type variantSet []*variant

// linearVariants is the size up to which get scans instead of bisecting.
const linearVariants = 8

// get returns the variant called name, or nil.
func (vs variantSet) get(name string) *variant {
	if len(vs) <= linearVariants {
		for _, v := range vs {
			if v.name == name {
				return v
			}
		}
		return nil
	}
	i := sort.Search(len(vs), func(i int) bool { return vs[i].name >= name })
	if i < len(vs) && vs[i].name == name {
		return vs[i]
	}
	return nil
}

// put adds v in name order; a variant of the same name is replaced (the
// last one wins, as in a map).
func (vs *variantSet) put(v *variant) {
	s := *vs
	i := sort.Search(len(s), func(i int) bool { return s[i].name >= v.name })
	if i < len(s) && s[i].name == v.name {
		s[i] = v
		return
	}
	s = append(s, nil)
	copy(s[i+1:], s[i:])
	s[i] = v
	*vs = s
}
