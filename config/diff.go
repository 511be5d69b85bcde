package config

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// FlagDiff is how one flag differs between two documents.
type FlagDiff struct {
	Flag   string          `json:"flag"`
	Change string          `json:"change"` // added, removed, changed
	Fields []string        `json:"fields,omitempty"`
	From   json.RawMessage `json:"from,omitempty"`
	To     json.RawMessage `json:"to,omitempty"`
}

// Diff is the difference between two versions of an environment.
type Diff struct {
	Env               string     `json:"env"`
	From              uint64     `json:"from"`
	To                uint64     `json:"to"`
	Flags             []FlagDiff `json:"flags"`
	MetadataChanged   bool       `json:"metadataChanged,omitempty"`
	EvaluatorsChanged bool       `json:"evaluatorsChanged,omitempty"`
	// Evaluators and Metadata say what changed in $evaluators (by name)
	// and in the flag-set metadata, when they did.
	Evaluators []EvaluatorDiff `json:"evaluators,omitempty"`
	Metadata   *MetadataDiff   `json:"metadata,omitempty"`
}

// DiffDocuments lists the flags that differ between a and b, by key.
func DiffDocuments(a, b *Document, only map[string]bool) []FlagDiff {
	keys := map[string]bool{}
	for _, k := range a.FlagKeys() {
		keys[k] = true
	}
	for _, k := range b.FlagKeys() {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		if only == nil || only[k] {
			sorted = append(sorted, k)
		}
	}
	sort.Strings(sorted)
	out := []FlagDiff{}
	for _, k := range sorted {
		from, to := a.FlagJSON(k), b.FlagJSON(k)
		switch {
		case from == nil && to == nil:
		case from == nil:
			out = append(out, FlagDiff{Flag: k, Change: "added", To: to})
		case to == nil:
			out = append(out, FlagDiff{Flag: k, Change: "removed", From: from})
		case !bytes.Equal(from, to):
			out = append(out, FlagDiff{Flag: k, Change: "changed", Fields: changedFields(from, to), From: from, To: to})
		}
	}
	return out
}

// changedFields names the top-level fields of a flag that differ.
func changedFields(a, b json.RawMessage) []string {
	var ma, mb map[string]json.RawMessage
	_ = json.Unmarshal(a, &ma)
	_ = json.Unmarshal(b, &mb)
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || !bytes.Equal(v, w) {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Text renders the diff for people: one line per flag, then each changed
// field as before → after.
func (d *Diff) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: version %d → %d, %d flag(s) differ\n", d.Env, d.From, d.To, len(d.Flags))
	writeFlagDiffs(&b, d.Flags)
	if d.MetadataChanged {
		fmt.Fprintf(&b, "~ flag-set metadata changed: %s → %s\n", orAbsent(d.Metadata.From), orAbsent(d.Metadata.To))
	}
	if d.EvaluatorsChanged {
		b.WriteString("~ $evaluators changed\n")
		writeEvaluatorDiffs(&b, d.Evaluators)
	}
	return b.String()
}

func writeFlagDiffs(b *strings.Builder, flags []FlagDiff) {
	for _, f := range flags {
		switch f.Change {
		case "added":
			fmt.Fprintf(b, "+ %s\n", f.Flag)
		case "removed":
			fmt.Fprintf(b, "- %s\n", f.Flag)
		default:
			fmt.Fprintf(b, "~ %s\n", f.Flag)
			var ma, mb map[string]json.RawMessage
			_ = json.Unmarshal(f.From, &ma)
			_ = json.Unmarshal(f.To, &mb)
			for _, field := range f.Fields {
				fmt.Fprintf(b, "    %s: %s → %s\n", field, orAbsent(ma[field]), orAbsent(mb[field]))
			}
		}
	}
}

func orAbsent(v json.RawMessage) string {
	if len(v) == 0 {
		return "(absent)"
	}
	return string(v)
}

// StateAt rebuilds an environment's state at version v from its log.
func (s *Store) StateAt(ctx context.Context, env string, v uint64) (*State, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	if v > head.Version {
		return nil, fmt.Errorf("env %s has no version %d (head is %d): %w", env, v, head.Version, ErrVersionNotFound)
	}
	if v == head.Version {
		return head, nil
	}
	st := emptyState(env)
	for i := uint64(1); i <= v; i++ {
		cs, err := s.Changeset(ctx, env, i)
		if err != nil {
			return nil, err
		}
		st = s.step(st, cs) // a foreign version leaves the flag set unchanged
	}
	return st, nil
}

// Diff compares two versions of an environment.
func (s *Store) Diff(ctx context.Context, env string, from, to uint64) (*Diff, error) {
	a, err := s.StateAt(ctx, env, from)
	if err != nil {
		return nil, err
	}
	b, err := s.StateAt(ctx, env, to)
	if err != nil {
		return nil, err
	}
	d := &Diff{Env: env, From: from, To: to, Flags: DiffDocuments(a.Doc, b.Doc, nil)}
	var ra, rb canonicalParts
	_ = json.Unmarshal(a.Doc.Canonical(), &ra)
	_ = json.Unmarshal(b.Doc.Canonical(), &rb)
	d.MetadataChanged = !bytes.Equal(ra.Metadata, rb.Metadata)
	d.EvaluatorsChanged = !bytes.Equal(ra.Evaluators, rb.Evaluators)
	if d.MetadataChanged {
		d.Metadata = &MetadataDiff{From: metadataJSON(a.Doc.metadata), To: metadataJSON(b.Doc.metadata)}
	}
	if d.EvaluatorsChanged {
		d.Evaluators = DiffEvaluators(a.Doc.evaluators, b.Doc.evaluators)
	}
	return d, nil
}

type canonicalParts struct {
	Metadata   json.RawMessage `json:"metadata"`
	Evaluators json.RawMessage `json:"$evaluators"`
}
