package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Retirement says when a flag may be removed. Before lifecycle reports it
// was a free-text note ("retirement": "remove after the Q3 launch"), and
// that form is still accepted and written back unchanged. It may now also
// be an object of machine-checkable criteria, every one of which must hold
// for the lifecycle report to say "retirement criteria met":
//
//	{"servedVariant": "on", "forDays": 14, "unusedForDays": 30,
//	 "after": "2026-12-31", "note": "..."}
//
// Fields are declared in alphabetical order: the struct's encoding is the
// canonical form (sorted keys), which the document hash depends on.
type Retirement struct {
	// After: not before this date (RFC 3339 date or date-time; a date
	// means the end of that day, UTC).
	After string `json:"after,omitempty"`
	// ForDays, with ServedVariant: the flag served ServedVariant for at
	// least 99.9 % of its evaluations over the last ForDays days, and was
	// not changed during them.
	ForDays int `json:"forDays,omitempty"`
	// Note is free text for people (the whole value in the string form).
	Note          string `json:"note,omitempty"`
	ServedVariant string `json:"servedVariant,omitempty"`
	// UnusedForDays: no evaluation reported for this many days.
	UnusedForDays int `json:"unusedForDays,omitempty"`
}

// Bounds of the day counts: usage day rollups are not kept for longer.
const (
	maxRetirementForDays    = 90
	maxRetirementUnusedDays = 365
)

var retirementFields = []string{"after", "forDays", "note", "servedVariant", "unusedForDays"}

// Checkable reports whether the retirement has criteria, not only a note.
func (r *Retirement) Checkable() bool {
	return r != nil && (r.After != "" || r.ServedVariant != "" || r.UnusedForDays > 0)
}

// AfterTime parses After; ok is false when unset or invalid.
func (r *Retirement) AfterTime() (time.Time, bool) {
	if r == nil || r.After == "" {
		return time.Time{}, false
	}
	t, err := parseExpires(r.After)
	return t, err == nil
}

// MarshalJSON writes a note alone as a JSON string (the form it was read
// in, so documents written before criteria existed keep their hash), and
// anything else as an object.
func (r Retirement) MarshalJSON() ([]byte, error) {
	if !r.Checkable() {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r.Note); err != nil {
			return nil, err
		}
		return bytes.TrimRight(buf.Bytes(), "\n"), nil
	}
	type plain Retirement
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(plain(r)); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// UnmarshalJSON reads either form, without the checks Parse makes.
func (r *Retirement) UnmarshalJSON(data []byte) error {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '"' {
		*r = Retirement{}
		return json.Unmarshal(t, &r.Note)
	}
	type plain Retirement
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*r = Retirement(p)
	return nil
}

// retirement parses a flag's "retirement" (raw is its JSON): a string is a
// note, an object is criteria checked against the flag's variants. It
// returns nil (with problems added) when the value is unusable.
func (p *parser) retirement(raw json.RawMessage, path string, variants map[string]json.RawMessage) *Retirement {
	var v any
	if err := decodeJSON(raw, &v); err != nil {
		p.add(path, "must be a note (string) or an object of criteria (%s)", strings.Join(retirementFields, ", "))
		return nil
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil
		}
		return &Retirement{Note: v}
	case map[string]any:
	default:
		p.add(path, "must be a note (string) or an object of criteria (%s), got %s", strings.Join(retirementFields, ", "), jsonTypeName(v))
		return nil
	}
	before := len(p.problems)
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(raw, &obj)
	if u := unknownFields(obj, retirementFields); len(u) > 0 {
		p.add(path, "unknown field(s) %s (allowed: %s)", strings.Join(u, ", "), strings.Join(retirementFields, ", "))
	}
	r := &Retirement{}
	str := func(field string, dst *string) {
		if b, ok := obj[field]; ok && json.Unmarshal(b, dst) != nil {
			p.add(path+"."+field, "must be a string")
		}
	}
	days := func(field string, dst *int, max int) {
		b, ok := obj[field]
		if !ok {
			return
		}
		if err := json.Unmarshal(b, dst); err != nil || *dst < 1 || *dst > max {
			p.add(path+"."+field, "must be a whole number of days from 1 to %d, got %s", max, b)
		}
	}
	str("note", &r.Note)
	str("servedVariant", &r.ServedVariant)
	str("after", &r.After)
	days("forDays", &r.ForDays, maxRetirementForDays)
	days("unusedForDays", &r.UnusedForDays, maxRetirementUnusedDays)
	if r.After != "" {
		if _, err := parseExpires(r.After); err != nil {
			p.add(path+".after", "%q is not an RFC 3339 date (2026-12-31) or date-time (2026-12-31T23:59:59Z)", r.After)
		}
	}
	switch {
	case r.ServedVariant != "" && r.ForDays == 0:
		p.add(path+".forDays", "required with servedVariant: for how many days the variant must have been served alone (e.g. 14)")
	case r.ServedVariant == "" && r.ForDays > 0:
		p.add(path+".servedVariant", "required with forDays: the variant that must have been served")
	case r.ServedVariant != "" && len(variants) > 0:
		if _, ok := variants[r.ServedVariant]; !ok {
			p.add(path+".servedVariant", "%q is not a variant of this flag (have: %s)", r.ServedVariant, strings.Join(keysOf(variants), ", "))
		}
	}
	if len(p.problems) == before && !r.Checkable() {
		p.add(path, "an object needs at least one criterion (servedVariant with forDays, unusedForDays or after); write a plain string for a note alone")
	}
	if len(p.problems) > before {
		return nil
	}
	return r
}

// String is the retirement as one line for people.
func (r *Retirement) String() string {
	if r == nil {
		return ""
	}
	var parts []string
	if r.ServedVariant != "" {
		parts = append(parts, fmt.Sprintf("served %q for %d days", r.ServedVariant, r.ForDays))
	}
	if r.UnusedForDays > 0 {
		parts = append(parts, fmt.Sprintf("unused for %d days", r.UnusedForDays))
	}
	if r.After != "" {
		parts = append(parts, "after "+r.After)
	}
	s := strings.Join(parts, " and ")
	switch {
	case s == "":
		return r.Note
	case r.Note != "":
		return s + " (" + r.Note + ")"
	}
	return s
}
