// Package config owns pennon's flag configuration: the flag document
// (flagd's JSON format plus pennon's per-flag fields), its validation with
// precise JSON paths, changesets and versions, and the versioned store on
// NATS JetStream. It compiles documents with the evaluator; it never serves
// HTTP.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
)

// Document is a parsed, validated flag document: flagd's JSON format plus
// pennon's per-flag fields. Documents are immutable once returned by Parse or
// Apply; share them freely.
type Document struct {
	schema     string
	flags      map[string]*FlagDoc
	metadata   map[string]any
	evaluators map[string]json.RawMessage // canonical JSON per evaluator
}

// FlagDoc is one flag's definition as written, with pennon's fields typed.
// Variants and Targeting hold canonical JSON (sorted keys, numbers as written).
type FlagDoc struct {
	State          string                     `json:"state"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant *string                    `json:"defaultVariant"`
	Targeting      json.RawMessage            `json:"targeting,omitempty"`
	Metadata       map[string]any             `json:"metadata,omitempty"`
	Owner          string                     `json:"owner,omitempty"`
	Description    string                     `json:"description,omitempty"`
	Expires        string                     `json:"expires,omitempty"` // RFC 3339 date or date-time
	Systems        []string                   `json:"systems,omitempty"`
	Retirement     string                     `json:"retirement,omitempty"`
	Prerequisites  map[string]string          `json:"prerequisites,omitempty"`
	Propagation    string                     `json:"propagation,omitempty"`
	FailMode       string                     `json:"failMode,omitempty"`
	SafeVariant    string                     `json:"safeVariant,omitempty"`
}

// Allowed values of pennon's enumerated fields.
const (
	PropagationCacheFirst        = "cache-first"
	PropagationAlwaysFresh       = "always-fresh"
	PropagationBackgroundRefresh = "background-refresh"
	FailModeOpen                 = "open"
	FailModeClosed               = "closed"
)

// ExpiresAt parses Expires (a date means the end of that day, UTC); ok is
// false when unset or invalid.
func (f *FlagDoc) ExpiresAt() (time.Time, bool) {
	t, err := parseExpires(f.Expires)
	return t, err == nil && f.Expires != ""
}

func parseExpires(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, err
	}
	return d.Add(24*time.Hour - time.Nanosecond), nil
}

// Enabled reports whether the flag's state is ENABLED.
func (f *FlagDoc) Enabled() bool { return f.State == "ENABLED" }

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

var flagKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$`)

var (
	topLevelFields = []string{"$schema", "$evaluators", "flags", "metadata"}
	flagFields     = []string{"defaultVariant", "description", "expires", "failMode", "metadata", "owner",
		"prerequisites", "propagation", "retirement", "safeVariant", "state", "systems", "targeting", "variants"}
)

// parser accumulates problems while reading a document.
type parser struct {
	problems []evaluator.Problem
}

func (p *parser) add(path, format string, args ...any) {
	p.problems = append(p.problems, evaluator.Problem{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// decodeJSON decodes with numbers kept as written (json.Number).
func decodeJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("unexpected data after the JSON document")
	}
	return nil
}

// canonicalJSON re-encodes decoded JSON with sorted keys and no whitespace.
func canonicalJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func jsonTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func unknownFields(m map[string]json.RawMessage, allowed []string) []string {
	var out []string
	for k := range m {
		if !contains(allowed, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Parse reads and fully validates a flag document (unknown fields, types,
// variants, default/safe variants, $ref, prerequisites and cycles, targeting
// compilation). Any problem gives a *ValidationError listing all of them.
func Parse(data []byte) (*Document, error) {
	var p parser
	var top map[string]json.RawMessage
	if err := decodeJSON(data, &top); err != nil {
		return nil, &ValidationError{Problems: []evaluator.Problem{{Path: "", Reason: "not a JSON object: " + err.Error()}}}
	}
	if top == nil {
		return nil, &ValidationError{Problems: []evaluator.Problem{{Reason: "document must be a JSON object"}}}
	}
	doc := &Document{flags: map[string]*FlagDoc{}, evaluators: map[string]json.RawMessage{}}
	if u := unknownFields(top, topLevelFields); len(u) > 0 {
		p.add("", "unknown field(s) %s (allowed: %s)", strings.Join(u, ", "), strings.Join(topLevelFields, ", "))
	}
	if raw, ok := top["$schema"]; ok {
		if err := json.Unmarshal(raw, &doc.schema); err != nil {
			p.add("$schema", "must be a string")
		}
	}
	if raw, ok := top["metadata"]; ok {
		doc.metadata = p.metadata(raw, "metadata")
	}
	if raw, ok := top["$evaluators"]; ok {
		var evs map[string]any
		if err := decodeJSON(raw, &evs); err != nil || evs == nil {
			p.add("$evaluators", "must be an object of named rules")
		}
		for name, rule := range evs {
			doc.evaluators[name] = canonicalJSON(rule)
		}
	}
	raw, ok := top["flags"]
	if !ok {
		p.add("flags", "required: the document must have a flags object")
	} else {
		var flags map[string]json.RawMessage
		if err := decodeJSON(raw, &flags); err != nil || flags == nil {
			p.add("flags", "must be an object mapping flag keys to definitions")
		}
		for key, def := range flags {
			if f := p.flag(key, def); f != nil {
				doc.flags[key] = f
			}
		}
	}
	if len(p.problems) == 0 {
		p.problems = append(p.problems, doc.check()...)
	} else {
		// Still report semantic problems of the flags that did parse, but not
		// the echoes of flags that were dropped (e.g. missing prerequisites).
		for _, pr := range doc.check() {
			if !strings.Contains(pr.Reason, "does not exist") {
				p.problems = append(p.problems, pr)
			}
		}
	}
	if len(p.problems) > 0 {
		sortProblems(p.problems)
		return nil, &ValidationError{Problems: dedupe(p.problems)}
	}
	return doc, nil
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

func (p *parser) metadata(raw json.RawMessage, path string) map[string]any {
	var m map[string]any
	if err := decodeJSON(raw, &m); err != nil || m == nil {
		p.add(path, "must be an object of string, number or boolean values")
		return nil
	}
	for k, v := range m {
		switch v.(type) {
		case string, bool, json.Number:
		default:
			p.add(path+"."+k, "metadata values must be string, number or boolean, got %s", jsonTypeName(v))
		}
	}
	return m
}

// flag parses one flag definition; nil when it is unusable.
func (p *parser) flag(key string, def json.RawMessage) *FlagDoc {
	base := "flags." + key
	before := len(p.problems)
	if !flagKeyPattern.MatchString(key) {
		p.add(base, "invalid flag key %q: use letters, digits, '_', '-' and '.', at most 200 characters", key)
	}
	var m map[string]json.RawMessage
	if err := decodeJSON(def, &m); err != nil || m == nil {
		p.add(base, "a flag definition must be a JSON object")
		return nil
	}
	if u := unknownFields(m, flagFields); len(u) > 0 {
		p.add(base, "unknown field(s) %s (allowed: %s)", strings.Join(u, ", "), strings.Join(flagFields, ", "))
	}
	f := &FlagDoc{}
	str := func(field string, dst *string) {
		if raw, ok := m[field]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				p.add(base+"."+field, "must be a string")
			}
		}
	}
	str("state", &f.State)
	switch f.State {
	case "ENABLED", "DISABLED":
	case "":
		if _, ok := m["state"]; !ok {
			p.add(base+".state", "required (ENABLED or DISABLED)")
		} else {
			p.add(base+".state", `"" is not allowed (allowed: ENABLED, DISABLED)`)
		}
	default:
		p.add(base+".state", "%q is not allowed (allowed: ENABLED, DISABLED)", f.State)
	}
	if raw, ok := m["variants"]; !ok {
		p.add(base+".variants", "required: an object of named variant values")
	} else {
		var vs map[string]any
		if err := decodeJSON(raw, &vs); err != nil || vs == nil {
			p.add(base+".variants", "must be an object of named variant values")
		} else {
			f.Variants = make(map[string]json.RawMessage, len(vs))
			for n, v := range vs {
				if v == nil {
					p.add(base+".variants."+n, "a variant value must not be null")
					continue
				}
				f.Variants[n] = canonicalJSON(v)
			}
			if len(vs) == 0 {
				p.add(base+".variants", "a flag needs at least one variant")
			}
		}
	}
	if raw, ok := m["defaultVariant"]; ok && string(raw) != "null" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			p.add(base+".defaultVariant", "must be a variant name (string) or null")
		} else {
			f.DefaultVariant = &s
		}
	}
	if raw, ok := m["targeting"]; ok {
		var t any
		if err := decodeJSON(raw, &t); err != nil {
			p.add(base+".targeting", "must be a JSON Logic rule")
		} else if _, isObj := t.(map[string]any); !isObj && t != nil {
			p.add(base+".targeting", "must be a JSON Logic rule object, got %s", jsonTypeName(t))
		} else if t != nil {
			f.Targeting = canonicalJSON(t)
		}
	}
	if raw, ok := m["metadata"]; ok {
		f.Metadata = p.metadata(raw, base+".metadata")
	}
	str("owner", &f.Owner)
	str("description", &f.Description)
	str("retirement", &f.Retirement)
	str("expires", &f.Expires)
	if f.Expires != "" {
		if _, err := parseExpires(f.Expires); err != nil {
			p.add(base+".expires", "%q is not an RFC 3339 date (2026-12-31) or date-time (2026-12-31T23:59:59Z)", f.Expires)
		}
	}
	if raw, ok := m["systems"]; ok {
		if err := json.Unmarshal(raw, &f.Systems); err != nil {
			p.add(base+".systems", "must be a list of system names (strings)")
		}
		for i, s := range f.Systems {
			if strings.TrimSpace(s) == "" {
				p.add(fmt.Sprintf("%s.systems[%d]", base, i), "must not be empty")
			}
		}
	}
	if raw, ok := m["prerequisites"]; ok {
		if err := json.Unmarshal(raw, &f.Prerequisites); err != nil {
			p.add(base+".prerequisites", "must be an object mapping flag keys to the variant they must evaluate to")
		}
	}
	str("propagation", &f.Propagation)
	switch f.Propagation {
	case "", PropagationCacheFirst, PropagationAlwaysFresh, PropagationBackgroundRefresh:
	default:
		p.add(base+".propagation", "%q is not allowed (allowed: always-fresh, background-refresh, cache-first)", f.Propagation)
	}
	str("failMode", &f.FailMode)
	switch f.FailMode {
	case "", FailModeOpen, FailModeClosed:
	default:
		p.add(base+".failMode", "%q is not allowed (allowed: closed, open)", f.FailMode)
	}
	str("safeVariant", &f.SafeVariant)
	if f.FailMode == FailModeClosed && f.SafeVariant == "" {
		p.add(base+".safeVariant", "required when failMode is closed (the variant served when freshness cannot be established)")
	}
	if len(p.problems) > before && len(f.Variants) == 0 {
		return nil // nothing left to check it with
	}
	return f
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

// specs converts the document into evaluator input, resolving $ref.
func (d *Document) specs() ([]evaluator.FlagSpec, []evaluator.Problem) {
	var problems []evaluator.Problem
	evs := map[string]any{}
	for name, raw := range d.evaluators {
		var v any
		_ = decodeJSON(raw, &v)
		evs[name] = v
	}
	specs := make([]evaluator.FlagSpec, 0, len(d.flags))
	for _, key := range d.FlagKeys() {
		f := d.flags[key]
		sp := evaluator.FlagSpec{Key: key, Disabled: f.State == "DISABLED", Prerequisites: f.Prerequisites, SafeVariant: f.SafeVariant}
		names := make([]string, 0, len(f.Variants))
		for n := range f.Variants {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			var v any
			_ = decodeJSON(f.Variants[n], &v)
			sp.Variants = append(sp.Variants, evaluator.VariantSpec{Name: n, Value: v})
		}
		if f.DefaultVariant != nil {
			sp.DefaultVariant, sp.HasDefaultVariant = *f.DefaultVariant, true
		}
		if len(f.Targeting) > 0 {
			var t any
			_ = decodeJSON(f.Targeting, &t)
			resolved, ps := resolveRefs(t, evs, "flags."+key+".targeting", nil)
			problems = append(problems, ps...)
			sp.Targeting = resolved
		}
		if len(d.metadata) > 0 || len(f.Metadata) > 0 {
			sp.Metadata = make(map[string]any, len(d.metadata)+len(f.Metadata))
			for k, v := range d.metadata {
				sp.Metadata[k] = v
			}
			for k, v := range f.Metadata {
				sp.Metadata[k] = v
			}
		}
		switch f.Propagation {
		case PropagationAlwaysFresh:
			sp.Propagation = evaluator.AlwaysFresh
		case PropagationBackgroundRefresh:
			sp.Propagation = evaluator.BackgroundRefresh
		}
		if f.FailMode == FailModeClosed {
			sp.FailMode = evaluator.FailClosed
		}
		specs = append(specs, sp)
	}
	return specs, problems
}

// resolveRefs substitutes {"$ref": "name"} with $evaluators[name],
// recursively, rejecting unknown names and reference cycles.
func resolveRefs(v any, evs map[string]any, path string, stack []string) (any, []evaluator.Problem) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"]; ok && len(x) == 1 {
			name, _ := ref.(string)
			rule, ok := evs[name]
			if !ok {
				return nil, []evaluator.Problem{{Path: "$evaluators." + name, Reason: "referenced but not defined (at " + path + ")"}}
			}
			if contains(stack, name) {
				return nil, []evaluator.Problem{{Path: "$evaluators." + name, Reason: "reference cycle " + strings.Join(append(stack, name), " → ")}}
			}
			return resolveRefs(rule, evs, "$evaluators."+name, append(stack, name))
		}
		out := make(map[string]any, len(x))
		var problems []evaluator.Problem
		for k, e := range x {
			r, ps := resolveRefs(e, evs, path+"."+k, stack)
			out[k] = r
			problems = append(problems, ps...)
		}
		return out, problems
	case []any:
		out := make([]any, len(x))
		var problems []evaluator.Problem
		for i, e := range x {
			r, ps := resolveRefs(e, evs, fmt.Sprintf("%s[%d]", path, i), stack)
			out[i] = r
			problems = append(problems, ps...)
		}
		return out, problems
	}
	return v, nil
}

// Empty returns a document with no flags.
func Empty() *Document {
	return &Document{flags: map[string]*FlagDoc{}, evaluators: map[string]json.RawMessage{}}
}

// FlagKeys returns the flag keys, sorted.
func (d *Document) FlagKeys() []string {
	keys := make([]string, 0, len(d.flags))
	for k := range d.flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Len is the number of flags.
func (d *Document) Len() int { return len(d.flags) }

// Flag returns one flag's definition (read-only), or nil.
func (d *Document) Flag(key string) *FlagDoc { return d.flags[key] }

// Metadata returns the flag-set metadata (read-only).
func (d *Document) Metadata() map[string]any { return d.metadata }

// FlagJSON returns one flag's definition as canonical JSON, or nil.
func (d *Document) FlagJSON(key string) json.RawMessage {
	f := d.flags[key]
	if f == nil {
		return nil
	}
	return canonicalJSON(f)
}

// canonicalDoc is the document's serialised shape.
type canonicalDoc struct {
	Schema     string                     `json:"$schema,omitempty"`
	Evaluators map[string]json.RawMessage `json:"$evaluators,omitempty"`
	Flags      map[string]*FlagDoc        `json:"flags"`
	Metadata   map[string]any             `json:"metadata,omitempty"`
}

// Canonical returns deterministic JSON for the document (sorted keys, no
// insignificant whitespace); Parse(Canonical()) gives an equal document.
func (d *Document) Canonical() []byte {
	return canonicalJSON(canonicalDoc{Schema: d.schema, Evaluators: d.evaluators, Flags: d.flags, Metadata: d.metadata})
}

// Hash is DocumentHash(d.Canonical()).
func (d *Document) Hash() string { return DocumentHash(d.Canonical()) }

// DocumentHash is "sha256:" + hex of canonical document bytes.
func DocumentHash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return "sha256:" + hex.EncodeToString(sum[:])
}

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
	putDefs := map[string]json.RawMessage{}
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
				putDefs[ch.Flag] = ch.Definition
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

// Compile builds the evaluator snapshot for this document at version.
func (d *Document) Compile(version uint64) (*evaluator.Snapshot, error) {
	specs, problems := d.specs()
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	s, ps := evaluator.NewSnapshot(version, specs, evaluator.SnapshotOptions{})
	if ps != nil {
		return nil, &ValidationError{Problems: ps}
	}
	return s, nil
}

func problems(path, reason string) []evaluator.Problem {
	return []evaluator.Problem{{Path: path, Reason: reason}}
}
