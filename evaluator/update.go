package evaluator

import (
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/pennon-dev/pennon/internal/cowmap"
)

// Update returns a snapshot at version equal to what NewSnapshot would build
// from s's flags with the flags in put compiled and added (replacing any of
// the same key) and the keys in del removed. s is not modified.
//
// It exists so that a changeset costs in proportion to the change, not to
// the flag set (a sidecar with 100,000 flags applies a one-flag change in
// well under a millisecond instead of seconds). Only the put flags are
// compiled. Flags that require a put or deleted flag, directly or through
// other flags, keep their compiled rules but are relinked to the new
// prerequisites (their reads, cost and clock use include their
// prerequisites'). Every other compiled flag is shared with s.
//
// The problems are NewSnapshot's for the flags compiled or relinked here:
// a missing or wrong prerequisite, a prerequisite cycle (which must pass
// through a put flag, since s had none) and whatever a put flag's own
// definition gets wrong. A key in both put and del is put.
func (s *Snapshot) Update(version uint64, put []FlagSpec, del []string) (*Snapshot, []Problem) {
	next := &Snapshot{version: version, id: snapshotIDs.Add(1), now: s.now}
	compiled := make(map[string]*Flag, len(put))
	wants := make(map[string]map[string]string, len(put))
	putKeys := make([]string, 0, len(put))
	problems := compileEach(put, nil, func(sp *FlagSpec, f *Flag) {
		compiled[sp.Key] = f
		wants[sp.Key] = sp.Prerequisites
		putKeys = append(putKeys, sp.Key)
	})
	var removed []string
	for _, k := range del {
		if _, ok := compiled[k]; !ok {
			if _, had := s.flags.Get(k); had {
				removed = append(removed, k)
			}
		}
	}
	next.keys = cowmap.EditSorted(s.keys, putKeys, removed)
	next.requiredBy = s.editRequiredBy(wants, removed)

	// The flags to link: every put flag and every flag that requires a
	// changed one, transitively. A relinked flag is a copy, so that s keeps
	// serving its own.
	relink := map[string]bool{}
	queue := append(append([]string{}, putKeys...), removed...)
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		deps, _ := next.requiredBy.Get(k)
		for _, d := range deps {
			if !relink[d] && compiled[d] == nil {
				relink[d] = true
				queue = append(queue, d)
			}
		}
	}
	next.flags = s.flags.Edit(func(e *cowmap.Editor[*Flag]) {
		for _, k := range removed {
			e.Delete(k)
		}
		for k, f := range compiled {
			e.Set(k, f)
		}
		for k := range relink {
			old, _ := s.flags.Get(k)
			f := *old
			f.reads, f.readsTime, f.dynamic, f.cost = f.own.reads, f.own.readsTime, f.own.dynamic, f.own.cost
			f.prereqs, f.collected = nil, false
			w := make(map[string]string, len(old.prereqs))
			for _, p := range old.prereqs {
				w[p.key] = p.want
			}
			wants[k] = w
			e.Set(k, &f)
		}
	})
	linked := make([]string, 0, len(compiled)+len(relink))
	for k := range wants {
		linked = append(linked, k)
	}
	sort.Strings(linked)
	for _, k := range linked {
		f, _ := next.flags.Get(k)
		problems = append(problems, linkPrereqs(f, wants[k], next.flags)...)
	}
	if len(problems) == 0 {
		if cyc := findCycle(next.flags, linked); cyc != nil {
			problems = append(problems, Problem{Path: "flags." + cyc[0] + ".prerequisites", Reason: "cycle " + strings.Join(cyc, " → ")})
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	for _, k := range linked {
		f, _ := next.flags.Get(k)
		collectReads(f, map[*Flag]bool{})
	}
	return next, nil
}

// editRequiredBy is s.requiredBy with the edges of the replaced and
// removed flags dropped and the put flags' (wants) added.
func (s *Snapshot) editRequiredBy(wants map[string]map[string]string, removed []string) *cowmap.Map[[]string] {
	drop := map[string][]string{}
	for _, k := range append(removed, slices.Collect(maps.Keys(wants))...) {
		if old, ok := s.flags.Get(k); ok {
			for _, p := range old.prereqs {
				drop[k] = append(drop[k], p.key)
			}
		}
	}
	add := make(map[string][]string, len(wants))
	for k, w := range wants {
		add[k] = slices.Collect(maps.Keys(w))
	}
	return cowmap.EditIndex(s.requiredBy, drop, add)
}

// At returns s at another version: the same compiled flags (shared) under
// a new ID. A document compiled once for validation serves any version
// without compiling again.
func (s *Snapshot) At(version uint64) *Snapshot {
	c := *s
	c.version, c.id = version, snapshotIDs.Add(1)
	return &c
}
