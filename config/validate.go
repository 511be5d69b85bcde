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
	specs, problems := d.specs()
	if _, ps := evaluator.NewSnapshot(0, specs, evaluator.SnapshotOptions{}); ps != nil {
		problems = append(problems, ps...)
	}
	return problems
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
