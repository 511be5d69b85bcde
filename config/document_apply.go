package config

import "fmt"

// Apply returns a new document with cs's changes (and metadata/evaluators
// replacements) applied, validated as a whole. d is never modified; on any
// problem it returns a *ValidationError whose paths name the flags as in a
// document (`flags.<key>...`).
func (d *Document) Apply(cs *Changeset) (*Document, error) {
	next := canonicalDoc{Schema: d.schema, Evaluators: d.evaluators, Metadata: d.metadata,
		Flags: make(map[string]*FlagDoc, len(d.flags)+len(cs.Changes))}
	for k, f := range d.flags {
		next.Flags[k] = f
	}
	var p parser
	seen := map[string]bool{}
	for i, ch := range cs.Changes {
		path := fmt.Sprintf("changes[%d]", i)
		if seen[ch.Flag] {
			p.add(path+".flag", "flag %q appears more than once in one changeset", ch.Flag)
			continue
		}
		seen[ch.Flag] = true
		switch ch.Op {
		case OpPut:
			if len(ch.Definition) == 0 {
				p.add(path+".definition", "required for put")
				continue
			}
			if f := p.flag(ch.Flag, ch.Definition); f != nil {
				next.Flags[ch.Flag] = f
			}
		case OpDelete:
			if _, ok := next.Flags[ch.Flag]; !ok {
				p.add("flags."+ch.Flag, "cannot delete: the flag does not exist")
				continue
			}
			delete(next.Flags, ch.Flag)
		default:
			p.add(path+".op", "%q is not allowed (allowed: put, delete)", ch.Op)
		}
	}
	if cs.Metadata != nil {
		next.Metadata = p.metadata(canonicalJSON(cs.Metadata), "metadata")
	}
	if cs.Evaluators != nil {
		next.Evaluators = cs.Evaluators
	}
	if len(p.problems) > 0 {
		return nil, &ValidationError{Problems: dedupe(p.problems)}
	}
	return Parse(canonicalJSON(next))
}
