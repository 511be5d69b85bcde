package flagdgrpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/pennon-dev/pennon/config"
)

// flagSet is a flag document in the form flagd's in-process providers read.
type flagSet struct {
	json     []byte            // the whole document, flagd's format
	flags    map[string]string // flag key → that flag's flagd JSON, to tell which flags changed
	shared   string            // flag-set metadata and $evaluators, which every flag may read
	metadata map[string]any    // flag-set metadata (sync_context, ResolveAll)
}

// flagdFlagFields are the per-flag members flagd's schema (flags.json,
// baseFlag) allows. pennon's own fields (owner, description, expires,
// systems, retirement, propagation, failMode, safeVariant, prerequisites…)
// are dropped: they steer the sidecar, not evaluation in the app, and a
// strict provider rejects members it does not know.
var flagdFlagFields = []string{"state", "variants", "defaultVariant", "targeting", "metadata"}

// buildFlagSet converts doc into flagd's format. Prerequisites, which flagd
// has no field for, are compiled into the dependent flag's targeting (see
// prereqInliner), so an in-process provider gives the answers the sidecar
// gives.
func buildFlagSet(doc *config.Document) (*flagSet, error) {
	var raw map[string]any
	d := json.NewDecoder(bytes.NewReader(doc.Canonical()))
	d.UseNumber() // keep numbers as written: 1 stays 1, not 1.0
	if err := d.Decode(&raw); err != nil {
		return nil, fmt.Errorf("flag document: %w", err)
	}
	flags, _ := raw["flags"].(map[string]any)
	evaluators, _ := raw["$evaluators"].(map[string]any)
	metadata, _ := raw["metadata"].(map[string]any)
	in := &prereqInliner{flags: flags, evaluators: evaluators}

	outFlags := make(map[string]any, len(flags))
	fs := &flagSet{flags: make(map[string]string, len(flags)), metadata: metadata}
	for key, v := range flags {
		f, _ := v.(map[string]any)
		out := make(map[string]any, len(flagdFlagFields))
		for _, name := range flagdFlagFields {
			if fv, ok := f[name]; ok {
				out[name] = fv
			}
		}
		if pr, _ := f["prerequisites"].(map[string]any); len(pr) > 0 {
			if g := in.guard(f, pr); g != nil {
				out["targeting"] = g
			}
		}
		outFlags[key] = out
		b, err := marshal(out)
		if err != nil {
			return nil, fmt.Errorf("flags.%s: %w", key, err)
		}
		fs.flags[key] = string(b)
	}
	top := map[string]any{"flags": outFlags}
	if s, ok := raw["$schema"]; ok {
		top["$schema"] = s
	}
	shared := map[string]any{}
	if len(evaluators) > 0 {
		top["$evaluators"] = evaluators
		shared["$evaluators"] = evaluators
	}
	if len(metadata) > 0 {
		top["metadata"] = metadata
		shared["metadata"] = metadata
	}
	var err error
	if fs.json, err = marshal(top); err != nil {
		return nil, err
	}
	b, err := marshal(shared)
	if err != nil {
		return nil, err
	}
	fs.shared = string(b)
	return fs, nil
}

// marshal is json.Marshal without HTML escaping (flag rules contain < and >,
// which flagd's parser reads either way, but people read this too).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// changedFlags lists the flags whose answers may differ between two flag
// sets, in flagd's event form (key → {"type": "write"|"update"|"delete"}).
// A change to flag-set metadata or $evaluators counts for every flag it can
// reach. Without documents (prev or next nil) every flag counts.
func changedFlags(prevKeys, nextKeys []string, prev, next *flagSet) map[string]string {
	out := map[string]string{}
	inNext := make(map[string]bool, len(nextKeys))
	for _, k := range nextKeys {
		inNext[k] = true
	}
	inPrev := make(map[string]bool, len(prevKeys))
	for _, k := range prevKeys {
		inPrev[k] = true
		if !inNext[k] {
			out[k] = "delete"
		}
	}
	for _, k := range nextKeys {
		switch {
		case !inPrev[k]:
			out[k] = "write"
		case prev == nil || next == nil || prev.shared != next.shared || prev.flags[k] != next.flags[k]:
			out[k] = "update"
		}
	}
	return out
}

// prereqInliner compiles pennon's prerequisites into JSON Logic, which is
// what flagd's providers can evaluate. The sidecar evaluates a flag F with
// prerequisites {P: want} as: when every P evaluates to variant want, F's own
// rule; otherwise F's default variant with reason DEFAULT. The guard
//
//	{"if": [<every P is want>, <F's rule, or F's default variant>, null]}
//
// gives the same variant and value (null means "default variant"). "P is
// want" inlines P's own rule, evaluated for P: $flagd.flagKey becomes P's key
// and a fractional without a bucketing value buckets on P's key plus the
// targeting key, as it would when P is evaluated. Known differences, in
// reason and metadata only: a flag without targeting whose prerequisites
// hold reports TARGETING_MATCH instead of STATIC, and the metadata has no
// prerequisiteFailed/prerequisiteRequired.
type prereqInliner struct {
	flags      map[string]any
	evaluators map[string]any
}

func (in *prereqInliner) guard(f map[string]any, prereqs map[string]any) any {
	then := f["targeting"]
	if isEmptyRule(then) {
		then = nil
		if def, ok := f["defaultVariant"].(string); ok {
			then = def
		}
	}
	cond := in.all(prereqs)
	if b, ok := cond.(bool); ok && b {
		return f["targeting"] // always met: keep the rule as written (and STATIC)
	}
	return map[string]any{"if": []any{cond, then, nil}}
}

// all is an expression that is true when every prerequisite holds, checked
// in key order as the evaluator does.
func (in *prereqInliner) all(prereqs map[string]any) any {
	keys := make([]string, 0, len(prereqs))
	for k := range prereqs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	terms := make([]any, 0, len(keys))
	for _, k := range keys {
		want, _ := prereqs[k].(string)
		t := in.is(k, want)
		if b, ok := t.(bool); ok {
			if !b {
				return false
			}
			continue // always true: leave it out
		}
		terms = append(terms, t)
	}
	switch len(terms) {
	case 0:
		return true
	case 1:
		return terms[0]
	}
	return map[string]any{"and": terms}
}

// is is an expression that is true when flag key evaluates to variant want,
// or a constant bool when that is known without a context.
func (in *prereqInliner) is(key, want string) any {
	p, _ := in.flags[key].(map[string]any)
	if p == nil || p["state"] == "DISABLED" {
		return false // a disabled prerequisite never holds
	}
	def, hasDef := p["defaultVariant"].(string)
	defIsWant := hasDef && def == want
	var base any = defIsWant
	if rule := p["targeting"]; !isEmptyRule(rule) {
		r := in.rewrite(rule, key, nil)
		// The rule yields a variant name; booleans name the variants
		// "true"/"false"; null means the default variant.
		terms := []any{map[string]any{"===": []any{r, want}}}
		switch want {
		case "true":
			terms = append(terms, map[string]any{"===": []any{r, true}})
		case "false":
			terms = append(terms, map[string]any{"===": []any{r, false}})
		}
		if defIsWant {
			terms = append(terms, map[string]any{"===": []any{r, nil}})
		}
		base = terms[0]
		if len(terms) > 1 {
			base = map[string]any{"or": terms}
		}
	}
	if pr, _ := p["prerequisites"].(map[string]any); len(pr) > 0 {
		cond := in.all(pr)
		if b, ok := cond.(bool); ok {
			if b {
				return base
			}
			return defIsWant
		}
		return map[string]any{"if": []any{cond, base, defIsWant}}
	}
	return base
}

// rewrite copies rule so that it evaluates as it would for flag key: every
// $ref is substituted (the evaluator may itself read the flag key),
// $flagd.flagKey becomes key, and a fractional without a bucketing value
// gets key + targetingKey as its explicit bucketing value.
func (in *prereqInliner) rewrite(rule any, key string, refs []string) any {
	switch x := rule.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = in.rewrite(e, key, refs)
		}
		return out
	case map[string]any:
		if len(x) == 1 {
			for op, arg := range x {
				switch op {
				case "$ref":
					// A served document has no reference cycles (it would
					// not compile); refs guards against one anyway.
					if name, ok := arg.(string); ok && !slices.Contains(refs, name) {
						if ev, ok := in.evaluators[name]; ok {
							return in.rewrite(ev, key, append(refs, name))
						}
					}
				case "var":
					if isFlagKeyVar(arg) {
						return key
					}
				case "fractional":
					if a, ok := arg.([]any); ok && len(a) > 0 {
						if _, bucket := a[0].([]any); bucket {
							rest := in.rewrite(a, key, refs).([]any)
							tk := map[string]any{"var": "targetingKey"}
							explicit := append([]any{map[string]any{"cat": []any{key, tk}}}, rest...)
							// Without a targeting key flagd's fractional has
							// nothing to bucket on; keep its own behaviour.
							return map[string]any{"if": []any{
								map[string]any{"!==": []any{tk, nil}},
								map[string]any{"fractional": explicit},
								map[string]any{"fractional": rest},
							}}
						}
					}
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = in.rewrite(v, key, refs)
		}
		return out
	}
	return rule
}

func isFlagKeyVar(arg any) bool {
	switch a := arg.(type) {
	case string:
		return a == "$flagd.flagKey"
	case []any:
		if len(a) > 0 {
			s, _ := a[0].(string)
			return s == "$flagd.flagKey"
		}
	}
	return false
}

func isEmptyRule(r any) bool {
	if r == nil {
		return true
	}
	m, ok := r.(map[string]any)
	return ok && len(m) == 0
}
