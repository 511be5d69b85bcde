package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// canonicalJSON re-encodes decoded JSON with sorted keys and no whitespace.
func canonicalJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(buf.Bytes(), "\n")
}

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
