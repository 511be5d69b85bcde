package config

import (
	"encoding/json"
	"fmt"

	"github.com/pennon-dev/pennon/evaluator"
)

// Apply returns a new document with cs's changes (and metadata/evaluators
// replacements) applied, validated as a whole. d is never modified; on any
// problem it returns a *ValidationError whose paths name the flags as in a
// document (`flags.<key>...`).
//
// Apply is incremental so that an update costs in proportion to the change,
// not to the flag set: unchanged flags are shared with d (documents are
// immutable), and only the changed flags, the flags that depend on them and
// their prerequisites are re-checked. Replacing `$evaluators` re-checks every
// flag, since any targeting may reference them.
func (d *Document) Apply(cs *Changeset) (*Document, error) {
	next := &Document{schema: d.schema, metadata: d.metadata, evaluators: d.evaluators,
		flags: make(map[string]*FlagDoc, len(d.flags)+len(cs.Changes))}
	for k, f := range d.flags {
		next.flags[k] = f
	}
	var p parser
	changed := make(map[string]bool, len(cs.Changes))
	for i, ch := range cs.Changes {
		path := fmt.Sprintf("changes[%d]", i)
		if changed[ch.Flag] {
			p.add(path+".flag", "flag %q appears more than once in one changeset", ch.Flag)
			continue
		}
		changed[ch.Flag] = true
		switch ch.Op {
		case OpPut:
			if len(ch.Definition) == 0 {
				p.add(path+".definition", "required for put")
				continue
			}
			p.problems = append(p.problems, duplicateKeys(ch.Definition, "flags."+ch.Flag)...)
			if f := p.flag(ch.Flag, ch.Definition); f != nil {
				next.flags[ch.Flag] = f
			}
		case OpDelete:
			if _, ok := next.flags[ch.Flag]; !ok {
				p.add("flags."+ch.Flag, "cannot delete: the flag does not exist")
				continue
			}
			delete(next.flags, ch.Flag)
		default:
			p.add(path+".op", "%q is not allowed (allowed: put, delete)", ch.Op)
		}
	}
	if cs.Metadata != nil {
		next.metadata = p.metadata(canonicalJSON(cs.Metadata), "metadata")
	}
	if cs.Evaluators != nil {
		next.evaluators = make(map[string]json.RawMessage, len(cs.Evaluators))
		for name, raw := range cs.Evaluators {
			var rule any
			if err := decodeJSON(raw, &rule); err != nil {
				p.add("$evaluators."+name, "must be a JSON Logic rule: %v", err)
				continue
			}
			next.evaluators[name] = canonicalJSON(rule)
		}
	}
	if len(p.problems) > 0 {
		sortProblems(p.problems)
		return nil, &ValidationError{Problems: dedupe(p.problems)}
	}
	var problems []evaluator.Problem
	if cs.Evaluators != nil {
		problems = next.check()
	} else {
		problems = next.checkFlags(next.affected(changed))
	}
	if len(problems) > 0 {
		sortProblems(problems)
		return nil, &ValidationError{Problems: dedupe(problems)}
	}
	return next, nil
}
