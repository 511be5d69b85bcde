package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/cowmap"
)

// Apply returns a new document with cs's changes (and metadata/evaluators
// replacements) applied, validated as a whole. d is never modified; on any
// problem it returns a *ValidationError whose paths name the flags as in a
// document (`flags.<key>...`).
//
// Apply is incremental so that an update costs in proportion to the change,
// not to the flag set: unchanged flags are shared with d (documents are
// immutable; the flag table is copy-on-write, see internal/cowmap), and only
// the changed flags, the flags that name them as prerequisites and their
// prerequisites are re-checked. Replacing `$evaluators` re-checks every
// flag, since any targeting may reference them. When d has been compiled,
// the result remembers what changed so that its Compile compiles only the
// changed flags (see Compile); when d has been hashed, the result's Hash
// rehashes only the buckets of the changed flags (hash_tree.go).
func (d *Document) Apply(cs *Changeset) (*Document, error) {
	next := &Document{schema: d.schema, metadata: d.metadata, evaluators: d.evaluators}
	var p parser
	changed := make(map[string]bool, len(cs.Changes))
	puts := make(map[string]*FlagDoc, len(cs.Changes))
	var putKeys, delKeys []string
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
				puts[ch.Flag] = f
				putKeys = append(putKeys, ch.Flag)
			}
		case OpDelete:
			if d.Flag(ch.Flag) == nil {
				p.add("flags."+ch.Flag, "cannot delete: the flag does not exist")
				continue
			}
			delKeys = append(delKeys, ch.Flag)
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
	next.flags = d.flags.Edit(func(e *cowmap.Editor[*FlagDoc]) {
		for _, k := range delKeys {
			e.Delete(k)
		}
		for k, f := range puts {
			e.Set(k, f)
		}
	})
	next.keys = cowmap.EditSorted(d.keys, putKeys, delKeys)
	drop, add := map[string][]string{}, map[string][]string{}
	for k := range changed {
		if old := d.Flag(k); old != nil {
			drop[k] = slices.Collect(maps.Keys(old.Prerequisites))
		}
		if f := puts[k]; f != nil {
			add[k] = slices.Collect(maps.Keys(f.Prerequisites))
		}
	}
	next.requiredBy = cowmap.EditIndex(d.requiredBy, drop, add)

	var problems []evaluator.Problem
	if cs.Evaluators != nil {
		// Any targeting may use the new $evaluators: check (and so
		// compile) every flag, and keep the snapshot for Compile.
		var snap *evaluator.Snapshot
		if snap, problems = next.checkFlags(next.keys); snap != nil {
			next.compiled.Store(snap)
		}
	} else {
		_, problems = next.checkFlags(next.affected(changed))
	}
	if len(problems) > 0 {
		sortProblems(problems)
		return nil, &ValidationError{Problems: dedupe(problems)}
	}
	// The hash rebuilds only the buckets of the changed keys from d's
	// table (building d's first if d has one pending, itself O(change)).
	if d.tree.Load() != nil || d.hashFrom.Load() != nil {
		next.hashFrom.Store(&hashDelta{base: d.hashTree(), changed: slices.Collect(maps.Keys(changed)),
			parts: cs.Metadata != nil || cs.Evaluators != nil})
	}
	// Flag-set metadata is part of every compiled flag: a new one is
	// compiled in full. Otherwise Compile starts from d's snapshot.
	if base := d.compiled.Load(); base != nil && cs.Metadata == nil && cs.Evaluators == nil {
		next.delta.Store(&docDelta{base: base, put: putKeys, del: delKeys})
	}
	return next, nil
}
