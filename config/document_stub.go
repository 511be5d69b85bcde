package config

// This file is the document API with placeholder bodies, so that the store,
// the control plane and the sync client can be written in parallel. The
// document's owner replaces it with the real implementation (and deletes this
// file); the signatures are the contract.

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
)

// Document is a parsed, validated flag document: flagd's JSON format plus
// pennon's per-flag fields. Documents are immutable once returned by Parse or
// Apply; share them freely.
type Document struct {
	flags map[string]*FlagDoc
}

// FlagDoc is one flag's definition as written, with pennon's fields typed.
type FlagDoc struct {
	State          string                     `json:"state"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant *string                    `json:"defaultVariant,omitempty"`
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

// ExpiresAt parses Expires (a date means the end of that day, UTC); ok is false when unset.
func (f *FlagDoc) ExpiresAt() (t time.Time, ok bool) { panic("not implemented") }

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

// Parse reads and fully validates a flag document (unknown fields, types,
// variants, default/safe variants, $ref, prerequisites and cycles, targeting
// compilation). Any problem gives a *ValidationError listing all of them.
func Parse(data []byte) (*Document, error) { panic("not implemented") }

// Empty returns a document with no flags.
func Empty() *Document { return &Document{flags: map[string]*FlagDoc{}} }

// FlagKeys returns the flag keys, sorted.
func (d *Document) FlagKeys() []string { panic("not implemented") }

// Flag returns one flag's definition (read-only), or nil.
func (d *Document) Flag(key string) *FlagDoc { return d.flags[key] }

// FlagJSON returns one flag's definition as canonical JSON, or nil.
func (d *Document) FlagJSON(key string) json.RawMessage { panic("not implemented") }

// Apply returns a new document with cs's changes (and metadata/evaluators
// replacements) applied, validated as a whole. d is never modified; on any
// problem it returns a *ValidationError whose paths name the flags as in a
// document (`flags.<key>...`).
func (d *Document) Apply(cs *Changeset) (*Document, error) { panic("not implemented") }

// Canonical returns deterministic JSON for the document (sorted keys, no
// insignificant whitespace); Parse(Canonical()) gives an equal document.
func (d *Document) Canonical() []byte { panic("not implemented") }

// Hash is DocumentHash(d.Canonical()).
func (d *Document) Hash() string { return DocumentHash(d.Canonical()) }

// DocumentHash is "sha256:" + hex of canonical document bytes.
func DocumentHash(canonical []byte) string { panic("not implemented") }

// Compile builds the evaluator snapshot for this document at version.
func (d *Document) Compile(version uint64) (*evaluator.Snapshot, error) { panic("not implemented") }
