package config

import (
	"errors"
	"strings"
	"testing"
)

func TestRetirementParse(t *testing.T) {
	flag := func(ret string) string {
		return `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","retirement":` + ret + `}}}`
	}
	cases := []struct {
		name string
		ret  string
		// canon is the flag's retirement as written back (canonical form).
		canon   string
		str     string
		problem string // a substring of the one problem expected
	}{
		{name: "note (the form before criteria)", ret: `"remove after the Q3 launch"`, canon: `"retirement":"remove after the Q3 launch"`, str: "remove after the Q3 launch"},
		{name: "criteria", ret: `{"servedVariant":"on","forDays":14}`, canon: `"retirement":{"forDays":14,"servedVariant":"on"}`, str: `served "on" for 14 days`},
		{name: "all criteria and a note", ret: `{"unusedForDays":30,"after":"2026-12-31","note":"ask payments","servedVariant":"off","forDays":7}`,
			canon: `"retirement":{"after":"2026-12-31","forDays":7,"note":"ask payments","servedVariant":"off","unusedForDays":30}`,
			str:   `served "off" for 7 days and unused for 30 days and after 2026-12-31 (ask payments)`},
		{name: "note alone in an object", ret: `{"note":"x"}`, problem: "flags.f.retirement: an object needs at least one criterion"},
		{name: "unknown variant", ret: `{"servedVariant":"maybe","forDays":3}`, problem: `flags.f.retirement.servedVariant: "maybe" is not a variant of this flag (have: off, on)`},
		{name: "variant without days", ret: `{"servedVariant":"on"}`, problem: "flags.f.retirement.forDays: required with servedVariant"},
		{name: "days without variant", ret: `{"forDays":3}`, problem: "flags.f.retirement.servedVariant: required with forDays"},
		{name: "days out of range", ret: `{"unusedForDays":0}`, problem: "flags.f.retirement.unusedForDays: must be a whole number of days from 1 to 365, got 0"},
		{name: "fractional days", ret: `{"servedVariant":"on","forDays":1.5}`, problem: "flags.f.retirement.forDays: must be a whole number of days from 1 to 90"},
		{name: "bad date", ret: `{"after":"next year"}`, problem: `flags.f.retirement.after: "next year" is not an RFC 3339 date`},
		{name: "unknown field", ret: `{"after":"2026-01-01","when":"soon"}`, problem: "flags.f.retirement: unknown field(s) when (allowed: after, forDays, note, servedVariant, unusedForDays)"},
		{name: "number", ret: `14`, problem: "flags.f.retirement: must be a note (string) or an object of criteria (after, forDays, note, servedVariant, unusedForDays), got number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Parse([]byte(flag(tc.ret)))
			if tc.problem != "" {
				var ve *ValidationError
				if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("err = %v, want a validation problem containing %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(doc.FlagJSON("f")); !strings.Contains(got, tc.canon) {
				t.Errorf("canonical %s does not contain %s", got, tc.canon)
			}
			if got := doc.Flag("f").Retirement.String(); got != tc.str {
				t.Errorf("String() = %q, want %q", got, tc.str)
			}
			// The canonical form parses back to the same flag.
			again, err := Parse(doc.Canonical())
			if err != nil {
				t.Fatal(err)
			}
			if string(again.FlagJSON("f")) != string(doc.FlagJSON("f")) {
				t.Errorf("round trip changed the flag: %s → %s", doc.FlagJSON("f"), again.FlagJSON("f"))
			}
		})
	}
}

// A note written before criteria existed keeps the document's hash.
func TestRetirementNoteKeepsHash(t *testing.T) {
	doc, err := Parse([]byte(`{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","retirement":"after launch"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","retirement":"after launch"}}}`
	if got := string(doc.Canonical()); got != want {
		t.Fatalf("canonical\n got %s\nwant %s", got, want)
	}
}

// Any retirement value either parses to a flag whose canonical form parses
// back identically, or is refused with problems; never a panic.
func FuzzRetirement(f *testing.F) {
	for _, s := range []string{`"note"`, `{"servedVariant":"on","forDays":14}`, `{"after":"2026-12-31","unusedForDays":30,"note":"x"}`,
		`{"forDays":1e400}`, `{"servedVariant":7}`, `null`, `[]`, `{"note":""}`, `""`, `{"after":"2026-02-30"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ret string) {
		doc, err := Parse([]byte(`{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","retirement":` + ret + `}}}`))
		if err != nil {
			return
		}
		again, err := Parse(doc.Canonical())
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", doc.Canonical(), err)
		}
		if string(again.FlagJSON("f")) != string(doc.FlagJSON("f")) {
			t.Fatalf("round trip changed the flag: %s → %s", doc.FlagJSON("f"), again.FlagJSON("f"))
		}
	})
}
