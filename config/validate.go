package config

import (
	"sort"
	"strings"

	"github.com/pennon-dev/pennon/evaluator"
)

// ValidationError lists every problem found in a document at once.
type ValidationError struct {
	Problems []evaluator.Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// check compiles the document and returns the evaluator's problems
// (variants, default/safe variants, targeting, prerequisites, cycles, $ref).
func (d *Document) check() []evaluator.Problem {
	_, ps := d.checkFlags(d.keys)
	return ps
}

// checkFlags is check restricted to keys, which must be closed under
// prerequisites (every prerequisite of a listed flag is listed). It returns
// the snapshot it compiled (version 0) when there is no problem.
func (d *Document) checkFlags(keys []string) (*evaluator.Snapshot, []evaluator.Problem) {
	specs, problems := d.specs(keys)
	snap, ps := evaluator.NewSnapshot(0, specs, evaluator.SnapshotOptions{})
	problems = append(problems, ps...)
	if len(problems) > 0 {
		return nil, problems
	}
	return snap, nil
}

func sortProblems(ps []evaluator.Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
}

func dedupe(ps []evaluator.Problem) []evaluator.Problem {
	out := ps[:0]
	seen := map[evaluator.Problem]bool{}
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func problems(path, reason string) []evaluator.Problem {
	return []evaluator.Problem{{Path: path, Reason: reason}}
}

// affected returns the flags whose validity can depend on the changed keys
// (put or deleted), closed under prerequisites, sorted: the changed flags
// that still exist, the flags naming a changed flag as a prerequisite, and
// every prerequisite reachable from those. A new prerequisite cycle always
// passes through a changed flag's new prerequisites, so it is inside this
// set; flags outside it compile exactly as they did in the valid old
// document.
func (d *Document) affected(changed map[string]bool) []string {
	set := map[string]bool{}
	var stack []string
	push := func(k string) {
		if !set[k] && d.Flag(k) != nil {
			set[k] = true
			stack = append(stack, k)
		}
	}
	for k := range changed {
		push(k)
		deps, _ := d.requiredBy.Get(k)
		for _, dep := range deps {
			push(dep)
		}
	}
	for len(stack) > 0 {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for pk := range d.Flag(k).Prerequisites {
			push(pk)
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
