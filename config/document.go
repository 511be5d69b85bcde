// Package config owns pennon's flag configuration: the flag document
// (flagd's JSON format plus pennon's per-flag fields), its validation with
// precise JSON paths, changesets and versions, and the versioned store on
// NATS JetStream. It compiles documents with the evaluator; it never serves
// HTTP.
package config

import (
	"encoding/json"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/cowmap"
)

// Document is a parsed, validated flag document: flagd's JSON format plus
// pennon's per-flag fields. Documents are immutable once returned by Parse or
// Apply; share them freely.
type Document struct {
	schema     string
	flags      *cowmap.Map[*FlagDoc]
	keys       []string // flag keys, sorted
	metadata   map[string]any
	evaluators map[string]json.RawMessage // canonical JSON per evaluator
	// requiredBy maps a flag key to the flags naming it as a prerequisite
	// (sorted), so Apply finds a change's dependents without a scan.
	requiredBy *cowmap.Map[[]string]

	// Derived state, filled at most once per document and then shared
	// (documents are immutable, these only cache what they determine).
	// compiled is the snapshot built from exactly this document (any
	// version); delta lets Compile build it from the snapshot of the
	// document Apply started from. tree is the hash's bucket table
	// (hash_tree.go), hashFrom lets it be built from the table of the
	// document Apply started from, legacy memoizes the legacy hash.
	compiled atomic.Pointer[evaluator.Snapshot]
	delta    atomic.Pointer[docDelta]
	tree     atomic.Pointer[hashTree]
	hashFrom atomic.Pointer[hashDelta]
	legacy   atomic.Pointer[string]
}

// docDelta is how a document differs from the one Apply made it from, for
// an incremental Compile: base is that document's compiled snapshot.
type docDelta struct {
	base *evaluator.Snapshot
	put  []string
	del  []string
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
	Retirement     *Retirement                `json:"retirement,omitempty"` // a note or criteria (retirement.go)
	Experiment     *Experiment                `json:"experiment,omitempty"` // experiment.go
	Prerequisites  map[string]string          `json:"prerequisites,omitempty"`
	Propagation    string                     `json:"propagation,omitempty"`
	FailMode       string                     `json:"failMode,omitempty"`
	SafeVariant    string                     `json:"safeVariant,omitempty"`
	// FallbackTargeting is a cheaper rule the sidecar serves when the flag's
	// evaluation exceeds TargetingBudget or the sidecar is overloaded
	// (docs/sidecar.md, "Graceful degradation of targeting").
	FallbackTargeting json.RawMessage `json:"fallbackTargeting,omitempty"`
	TargetingBudget   string          `json:"targetingBudget,omitempty"` // Go duration, e.g. "20us"

	// canon is the flag's canonical JSON, encoded once when parsed so that
	// Canonical and Hash assemble a document instead of encoding it.
	canon json.RawMessage
	// decoded keeps the values Parse already decoded, so that checking and
	// compiling do not decode the same JSON again (read-only, shared).
	// Parse drops them once the document is compiled.
	decoded decodedRules
}

// decodedRules are a flag's variants and rules as Parse decoded them.
type decodedRules struct {
	variants  map[string]any
	targeting any
	fallback  any
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

// Empty returns a document with no flags.
func Empty() *Document {
	return &Document{flags: cowmap.New[*FlagDoc](0), evaluators: map[string]json.RawMessage{}, requiredBy: cowmap.New[[]string](0)}
}

// FlagKeys returns the flag keys, sorted (a copy the caller may modify).
func (d *Document) FlagKeys() []string { return slices.Clone(d.keys) }

// Len is the number of flags.
func (d *Document) Len() int { return d.flags.Len() }

// Flag returns one flag's definition (read-only), or nil.
func (d *Document) Flag(key string) *FlagDoc {
	f, _ := d.flags.Get(key)
	return f
}

// Metadata returns the flag-set metadata (read-only).
func (d *Document) Metadata() map[string]any { return d.metadata }
