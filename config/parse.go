package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/cowmap"
	"github.com/pennon-dev/pennon/internal/parallel"
)

// validFlagKey is the flag key rule: ^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$
// (letters, digits, '_', '-' and '.', not starting with '-' or '.', at most
// 200 bytes). A loop, not a regexp: it runs once per flag at start-up.
func validFlagKey(key string) bool {
	if len(key) == 0 || len(key) > 200 || key[0] == '.' || key[0] == '-' {
		return false
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

var (
	topLevelFields = []string{"$schema", "$evaluators", "flags", "metadata"}
	flagFields     = []string{"defaultVariant", "description", "experiment", "expires", "failMode", "fallbackTargeting", "metadata", "owner",
		"prerequisites", "propagation", "retirement", "safeVariant", "state", "systems", "targeting", "targetingBudget", "variants"}
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
	doc, p, pre, ok := parseFast(data, true)
	if !ok {
		return parseExactly(data)
	}
	return finishParse(doc, &p, pre)
}

// parseExactly is Parse on the exact path alone: what Parse does once the
// fast path has declined.
func parseExactly(data []byte) (*Document, error) {
	doc, p := parseExact(data)
	if doc == nil {
		return nil, &ValidationError{Problems: p.problems}
	}
	return finishParse(doc, &p, nil)
}

// parseExact reads data with encoding/json, reporting every problem it
// finds; a nil document means data is not a JSON object at all.
func parseExact(data []byte) (*Document, parser) {
	var p parser
	var top map[string]json.RawMessage
	if err := decodeJSON(data, &top); err != nil {
		return nil, parser{problems: []evaluator.Problem{{Path: "", Reason: describeJSONError(data, err)}}}
	}
	if top == nil {
		return nil, parser{problems: []evaluator.Problem{{Reason: "document must be a JSON object"}}}
	}
	doc := &Document{evaluators: map[string]json.RawMessage{}}
	p.problems = append(p.problems, duplicateKeys(data, "")...)
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
		doc.flags = cowmap.New[*FlagDoc](0)
		return doc, p
	}
	var flags map[string]json.RawMessage
	if err := decodeJSON(raw, &flags); err != nil || flags == nil {
		p.add("flags", "must be an object mapping flag keys to definitions")
	}
	keys := make([]string, 0, len(flags))
	defs := make([][]byte, 0, len(flags))
	for k, def := range flags {
		keys, defs = append(keys, k), append(defs, def)
	}
	parsed, _ := parseFlags(&p, keys, defs, nil, nil)
	doc.flags = newFlagTable(keys, parsed)
	for i, key := range keys {
		if parsed[i] != nil {
			doc.keys = append(doc.keys, key)
		}
	}
	return doc, p
}

// newFlagTable holds the flags that parsed (parsed[i] is keys[i]'s or nil).
func newFlagTable(keys []string, parsed []*FlagDoc) *cowmap.Map[*FlagDoc] {
	t := cowmap.New[*FlagDoc](len(keys))
	for i, key := range keys {
		if f := parsed[i]; f != nil {
			t.Set(key, f)
		}
	}
	return t
}

// finishParse checks and compiles what either path read: prerequisites,
// cycles, targeting compilation (the same code for both, so the same
// problems).
func finishParse(doc *Document, p *parser, pre *precompiled) (*Document, error) {
	sort.Strings(doc.keys)
	edges := map[string][]string{}
	for _, k := range doc.keys {
		for pk := range doc.Flag(k).Prerequisites {
			edges[k] = append(edges[k], pk)
		}
	}
	doc.requiredBy = cowmap.Index(edges)
	if len(p.problems) == 0 {
		// The check compiles every flag; keep the result so that Compile
		// does not do it again (a sidecar's start-up).
		var snap *evaluator.Snapshot
		var ps []evaluator.Problem
		if pre != nil {
			snap, ps = evaluator.NewSnapshot(0, pre.specs, evaluator.SnapshotOptions{Compiled: pre.compiled})
		} else {
			snap, ps = doc.checkFlags(doc.keys)
		}
		p.problems = append(p.problems, ps...)
		if snap != nil {
			doc.compiled.Store(snap)
		}
		// The decoded rules only spared compiling a second decode; the
		// snapshot holds what evaluation needs, and a later full compile
		// (an $evaluators change) decodes again. Kept, they were a quarter
		// of the live heap at 100,000 flags.
		for _, k := range doc.keys {
			doc.Flag(k).decoded = decodedRules{}
		}
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

// parseFlags parses every flag definition (defs[i] is keys[i]'s), on all
// cores when there are many: each flag is independent. fast, when set, is
// tried first and parser.flag reads what it declines. Problems are added
// to p (sorted by path later, as always); parsed[i] is keys[i]'s flag or
// nil.
//
// With fast set (Parse's fast path), then is called with each flag that
// parsed without a problem, in the same goroutine, so the flag is
// compiled while its decoded rules are fresh and dropped at once; its
// false means "let the exact path do this document" and makes parseFlags
// report declined.
//
// Worker w takes a contiguous share of the flags, in order
// (parallel.Ranges), so a caller can gather per-worker output in key order.
func parseFlags(p *parser, keys []string, defs [][]byte, fast func(key string, def []byte, w *fastWorker) *FlagDoc, then func(w, i int, f *FlagDoc) (keep *FlagDoc, ok bool)) (parsed []*FlagDoc, declined bool) {
	parsed = make([]*FlagDoc, len(keys))
	workers := parseWorkers(len(keys))
	parts := make([]parser, workers)
	var decline atomic.Bool
	one := func(w, i int, fw *fastWorker) {
		if fast != nil {
			f := fast(keys[i], defs[i], fw)
			if f == nil {
				// The fast path's scan did not look for repeated keys
				// inside the definitions; fast did for the ones it took.
				before := len(parts[w].problems)
				parts[w].problems = append(parts[w].problems, duplicateKeys(defs[i], "flags."+keys[i])...)
				f = parts[w].flag(keys[i], defs[i])
				if len(parts[w].problems) > before {
					f = nil
				}
			}
			if f != nil && then != nil {
				var ok bool
				if f, ok = then(w, i, f); !ok {
					decline.Store(true)
				}
			}
			parsed[i] = f
			return
		}
		parsed[i] = parts[w].flag(keys[i], defs[i])
	}
	parallel.Ranges(len(keys), workers, func(w, from, to int) {
		var fw fastWorker
		for i := from; i < to; i++ {
			one(w, i, &fw)
		}
	})
	for _, part := range parts {
		p.problems = append(p.problems, part.problems...)
	}
	return parsed, decline.Load()
}

// parseWorkers is how many goroutines parseFlags uses for n flags.
func parseWorkers(n int) int { return parallel.Workers(n, 512) }

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
	if !validFlagKey(key) {
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
				if f.decoded.variants == nil {
					f.decoded.variants = make(map[string]any, len(vs))
				}
				f.decoded.variants[n] = v
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
			f.decoded.targeting = t
		}
	}
	if raw, ok := m["fallbackTargeting"]; ok {
		var t any
		if err := decodeJSON(raw, &t); err != nil {
			p.add(base+".fallbackTargeting", "must be a JSON Logic rule")
		} else if _, isObj := t.(map[string]any); !isObj {
			p.add(base+".fallbackTargeting", "must be a JSON Logic rule object (use {} to serve the default variant), got %s", jsonTypeName(t))
		} else {
			f.FallbackTargeting = canonicalJSON(t)
			f.decoded.fallback = t
		}
	}
	str("targetingBudget", &f.TargetingBudget)
	if f.TargetingBudget != "" {
		if _, err := parseBudget(f.TargetingBudget); err != nil {
			p.add(base+".targetingBudget", "%v", err)
		} else if len(f.FallbackTargeting) == 0 {
			p.add(base+".targetingBudget", "needs fallbackTargeting: the budget decides when the fallback rule is served")
		}
	}
	if raw, ok := m["metadata"]; ok {
		f.Metadata = p.metadata(raw, base+".metadata")
	}
	str("owner", &f.Owner)
	str("description", &f.Description)
	if raw, ok := m["retirement"]; ok {
		f.Retirement = p.retirement(raw, base+".retirement", f.Variants)
	}
	if raw, ok := m["experiment"]; ok {
		f.Experiment = p.experiment(raw, base+".experiment", f.Variants)
	}
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
	if !validPropagation(f.Propagation) {
		p.add(base+".propagation", "%q is not allowed (allowed: always-fresh, background-refresh, cache-first)", f.Propagation)
	}
	str("failMode", &f.FailMode)
	if !validFailMode(f.FailMode) {
		p.add(base+".failMode", "%q is not allowed (allowed: closed, open)", f.FailMode)
	}
	str("safeVariant", &f.SafeVariant)
	if f.FailMode == FailModeClosed && f.SafeVariant == "" {
		p.add(base+".safeVariant", "required when failMode is closed (the variant served when freshness cannot be established)")
	}
	if len(p.problems) > before && len(f.Variants) == 0 {
		return nil // nothing left to check it with
	}
	f.canon = canonicalJSON(f)
	return f
}

// validPropagation and validFailMode are the allowed values of those
// fields (empty: the default), for parser.flag and fastFlag alike.
func validPropagation(s string) bool {
	switch s {
	case "", PropagationCacheFirst, PropagationAlwaysFresh, PropagationBackgroundRefresh:
		return true
	}
	return false
}

func validFailMode(s string) bool {
	return s == "" || s == FailModeOpen || s == FailModeClosed
}

// maxTargetingBudget bounds targetingBudget: an evaluation budget is
// microseconds; a value in seconds is a typo, not a budget.
const maxTargetingBudget = time.Second

// parseBudget reads a targetingBudget (a Go duration such as "20us").
func parseBudget(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration: write a Go duration such as \"20us\" or \"1.5ms\"", s)
	case d <= 0:
		return 0, fmt.Errorf("%q must be positive (e.g. \"20us\")", s)
	case d > maxTargetingBudget:
		return 0, fmt.Errorf("%q is above the maximum %s: an evaluation budget is microseconds (e.g. \"20us\")", s, maxTargetingBudget)
	}
	return d, nil
}

// describeJSONError turns a decoding error of a whole document into a
// reason a person can act on: where the syntax breaks (line and column), or
// what was found instead of the top-level object.
func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := lineCol(data, syn.Offset)
		return fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, syn.Error())
	case errors.As(err, &typ):
		return fmt.Sprintf("the document must be a JSON object with a flags object, got %s", typ.Value)
	case errors.Is(err, io.EOF):
		return "the document is empty: expected a JSON object with a flags object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: the document ends before it is complete"
	}
	return "invalid JSON: " + err.Error()
}

// lineCol converts a byte offset into 1-based line and column numbers.
func lineCol(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	line, col = 1, 1
	for _, b := range data[:max(offset-1, 0)] {
		if b == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
