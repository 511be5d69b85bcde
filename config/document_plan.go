package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// FlagdSchema is the $schema an exported document names when the
// environment's set has none, so editors and flagd recognise the file.
const FlagdSchema = "https://flagd.dev/schema/v0/flags.json"

// Export is the document as a flagd-format file: canonical JSON (sorted
// keys, no insignificant whitespace) with $schema defaulted to flagd's.
// Apply of an exported file to the same environment is a no-op plan, and
// exporting again gives the same bytes.
func (d *Document) Export() []byte {
	schema := d.schema
	if schema == "" {
		schema = FlagdSchema
	}
	var b bytes.Buffer
	b.Grow(d.canonicalSize())
	d.writeCanonical(&b, schema)
	return b.Bytes()
}

// Evaluators returns the document's $evaluators (canonical JSON per name);
// the map is shared, do not modify it.
func (d *Document) Evaluators() map[string]json.RawMessage { return d.evaluators }

// EvaluatorDiff is how one named $evaluators rule differs.
type EvaluatorDiff struct {
	Name   string          `json:"name"`
	Change string          `json:"change"` // added, removed, changed
	From   json.RawMessage `json:"from,omitempty"`
	To     json.RawMessage `json:"to,omitempty"`
}

// MetadataDiff is a change of the flag-set metadata (replaced as a whole).
type MetadataDiff struct {
	From json.RawMessage `json:"from,omitempty"`
	To   json.RawMessage `json:"to"`
}

// ApplyPlan is what applying a flag file to an environment would do. It
// becomes exactly one changeset (Changes, Metadata, Evaluators).
type ApplyPlan struct {
	Env   string `json:"env"`
	Head  uint64 `json:"head"` // the version the plan was computed at
	Prune bool   `json:"prune"`
	// Flags are the flags added, changed and (with prune) removed.
	Flags []FlagDiff `json:"flags"`
	// Kept are flags of the environment that the file does not have and
	// that stay because prune is off.
	Kept       []string        `json:"kept"`
	Unchanged  int             `json:"unchanged"`
	Evaluators []EvaluatorDiff `json:"evaluators"`
	// MetadataChange is set when the flag-set metadata changes.
	MetadataChange *MetadataDiff `json:"metadataChange,omitempty"`
	// Notes explain what the plan could not do as the file says.
	Notes []string `json:"notes"`
	// The changeset parts. Each change's BaseVersion is the flag's version
	// in the state the plan was made from (or the caller's BaseVersions).
	Changes    []Change                   `json:"changes"`
	Metadata   map[string]any             `json:"metadata,omitempty"`
	NewEvals   map[string]json.RawMessage `json:"newEvaluators,omitempty"`
	FlagBases  map[string]uint64          `json:"baseVersions"`
	HeadHash   string                     `json:"headHash"`
	ResultHash string                     `json:"resultHash"`
}

// Empty reports whether applying would change nothing.
func (p *ApplyPlan) Empty() bool {
	return len(p.Changes) == 0 && p.Metadata == nil && p.NewEvals == nil
}

// Changeset is the plan as one changeset to commit.
func (p *ApplyPlan) Changeset(author, reason string) *Changeset {
	return &Changeset{Env: p.Env, Author: author, Reason: reason, Changes: p.Changes, Metadata: p.Metadata, Evaluators: p.NewEvals}
}

// PlanApply computes how to make head's flag set equal to doc. Without
// prune, flags and $evaluators missing from doc are kept (and listed); with
// prune, such flags are deleted and such evaluators dropped. bases, when
// non-nil, are the per-flag versions the caller planned against (a flag
// absent from bases was absent then): a flag changed since gives a
// conflict at commit, naming it. The resulting set is validated; a plan that
// could not be committed is a *ValidationError.
func PlanApply(head *State, doc *Document, prune bool, bases map[string]uint64) (*ApplyPlan, error) {
	if bases == nil {
		bases = head.flagVersionMap()
	}
	p := &ApplyPlan{Env: head.Env, Head: head.Version, Prune: prune, Flags: []FlagDiff{}, Kept: []string{},
		Evaluators: []EvaluatorDiff{}, Notes: []string{}, Changes: []Change{}, FlagBases: map[string]uint64{}, HeadHash: head.Hash}
	for k, v := range bases {
		p.FlagBases[k] = v
	}
	for _, d := range DiffDocuments(head.Doc, doc, nil) {
		switch d.Change {
		case "removed":
			if !prune {
				p.Kept = append(p.Kept, d.Flag)
				continue
			}
			p.Changes = append(p.Changes, Change{Flag: d.Flag, Op: OpDelete, BaseVersion: bases[d.Flag]})
		default:
			p.Changes = append(p.Changes, Change{Flag: d.Flag, Op: OpPut, Definition: d.To, BaseVersion: bases[d.Flag]})
		}
		p.Flags = append(p.Flags, d)
	}
	p.Unchanged = head.Doc.Len() - len(p.Kept) - countChange(p.Flags, "changed") - countChange(p.Flags, "removed")

	// $evaluators: merged (file wins) or, with prune, the file's exactly.
	cur, want := head.Doc.evaluators, doc.evaluators
	next := map[string]json.RawMessage{}
	if !prune {
		for k, v := range cur {
			next[k] = v
		}
	}
	for k, v := range want {
		next[k] = v
	}
	p.Evaluators = DiffEvaluators(cur, next)
	if !prune {
		for _, name := range keysOf(cur) {
			if _, ok := want[name]; !ok {
				p.Notes = append(p.Notes, fmt.Sprintf("$evaluators.%s is not in the file and is kept (use prune to drop it)", name))
			}
		}
	}
	if len(p.Evaluators) > 0 {
		if len(next) == 0 {
			// A changeset replaces $evaluators only when it carries a
			// non-empty map (an empty one is not on the wire), so the last
			// evaluator cannot be dropped this way; say so instead of
			// committing something a replay would read differently.
			p.Notes = append(p.Notes, "the file has no $evaluators: the environment's are kept (a changeset cannot empty $evaluators; remove their uses and leave one rule in the file)")
			p.Evaluators = []EvaluatorDiff{}
		} else {
			p.NewEvals = next
		}
	}

	// Flag-set metadata is one value: the file's replaces the environment's.
	curMeta, wantMeta := metadataJSON(head.Doc.metadata), metadataJSON(doc.metadata)
	switch {
	case len(doc.metadata) == 0:
		if len(head.Doc.metadata) > 0 {
			p.Notes = append(p.Notes, "the file has no flag-set metadata: the environment's is kept")
		}
	case !bytes.Equal(curMeta, wantMeta):
		p.MetadataChange = &MetadataDiff{From: curMeta, To: wantMeta}
		p.Metadata = doc.metadata
	}

	if p.Empty() {
		p.ResultHash = head.Hash
		return p, nil
	}
	after, err := head.Doc.Apply(p.Changeset("", ""))
	if err != nil {
		return nil, err
	}
	p.ResultHash = after.Hash()
	return p, nil
}

// DiffEvaluators lists, by name, how two $evaluators maps differ.
func DiffEvaluators(cur, next map[string]json.RawMessage) []EvaluatorDiff {
	out := []EvaluatorDiff{}
	for _, name := range keysOf(union(cur, next)) {
		from, to := cur[name], next[name]
		switch {
		case from == nil && to != nil:
			out = append(out, EvaluatorDiff{Name: name, Change: "added", To: to})
		case from != nil && to == nil:
			out = append(out, EvaluatorDiff{Name: name, Change: "removed", From: from})
		case !bytes.Equal(from, to):
			out = append(out, EvaluatorDiff{Name: name, Change: "changed", From: from, To: to})
		}
	}
	return out
}

// writeEvaluatorDiffs renders evaluator differences, one line each.
func writeEvaluatorDiffs(b *strings.Builder, evs []EvaluatorDiff) {
	for _, e := range evs {
		switch e.Change {
		case "added":
			fmt.Fprintf(b, "+ $evaluators.%s: %s\n", e.Name, e.To)
		case "removed":
			fmt.Fprintf(b, "- $evaluators.%s: %s\n", e.Name, e.From)
		default:
			fmt.Fprintf(b, "~ $evaluators.%s: %s → %s\n", e.Name, e.From, e.To)
		}
	}
}

func countChange(fs []FlagDiff, change string) int {
	n := 0
	for _, f := range fs {
		if f.Change == change {
			n++
		}
	}
	return n
}

func union(a, b map[string]json.RawMessage) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func metadataJSON(m map[string]any) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return canonicalJSON(m)
}

// Text renders the plan for people: one line per flag (+ add, ~ change with
// each field before → after, - remove, = kept), then $evaluators, metadata
// and notes.
func (p *ApplyPlan) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Plan for %s at version %d: %d to add, %d to change, %d to remove, %d unchanged",
		p.Env, p.Head, countChange(p.Flags, "added"), countChange(p.Flags, "changed"), countChange(p.Flags, "removed"), p.Unchanged)
	if len(p.Kept) > 0 {
		fmt.Fprintf(&b, ", %d kept (not in the file; --prune deletes them)", len(p.Kept))
	}
	b.WriteString("\n")
	if p.Empty() {
		b.WriteString("No changes: the environment already matches the file.\n")
	}
	writeFlagDiffs(&b, p.Flags)
	for _, k := range p.Kept {
		fmt.Fprintf(&b, "= %s (kept: not in the file)\n", k)
	}
	writeEvaluatorDiffs(&b, p.Evaluators)
	if p.MetadataChange != nil {
		fmt.Fprintf(&b, "~ metadata: %s → %s\n", orAbsent(p.MetadataChange.From), p.MetadataChange.To)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// referencedEvaluators returns the $evaluators names the flags' targeting
// and fallbackTargeting use, directly or through other evaluators, sorted.
func referencedEvaluators(d *Document, flags []string) []string {
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok && len(x) == 1 {
				if seen[ref] {
					return
				}
				seen[ref] = true
				var rule any
				if raw, ok := d.evaluators[ref]; ok && json.Unmarshal(raw, &rule) == nil {
					walk(rule)
				}
				return
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	for _, k := range flags {
		f := d.Flag(k)
		if f == nil {
			continue
		}
		for _, rule := range []json.RawMessage{f.Targeting, f.FallbackTargeting} {
			var t any
			if len(rule) > 0 && json.Unmarshal(rule, &t) == nil {
				walk(t)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PromotionEvaluators is the $evaluators the target needs after promoting
// flags from src: dst's, with every evaluator the flags reference ($ref,
// transitively) taken from src. nil when dst already has them all equal.
// An evaluator the target has under the same name with another rule is
// replaced, which also changes the target's other flags that use it; the
// names of such evaluators are returned so the caller can say so.
func PromotionEvaluators(src, dst *Document, flags []string) (map[string]json.RawMessage, []string) {
	var replaced []string
	changed := false
	next := make(map[string]json.RawMessage, len(dst.evaluators))
	for k, v := range dst.evaluators {
		next[k] = v
	}
	for _, name := range referencedEvaluators(src, flags) {
		rule, ok := src.evaluators[name]
		if !ok {
			continue // src is valid, so this cannot happen; validation would say so
		}
		if cur, ok := dst.evaluators[name]; ok {
			if bytes.Equal(cur, rule) {
				continue
			}
			replaced = append(replaced, name)
		}
		next[name] = rule
		changed = true
	}
	if !changed {
		return nil, nil
	}
	return next, replaced
}
