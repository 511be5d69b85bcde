package config

import (
	"os"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/evaluator"
)

func TestExamplesValid(t *testing.T) {
	for _, f := range []string{"../examples/checkout.json", "../examples/basic.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := Parse(doc.Canonical())
		if err != nil || again.Hash() != doc.Hash() {
			t.Fatalf("%s: canonical form does not round-trip: %v", f, err)
		}
		if _, err := doc.Compile(1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"unknown top-level", `{"flags":{},"flagz":1}`, []string{`unknown field(s) flagz (allowed: $schema, $evaluators, flags, metadata)`}},
		{"unknown flag field", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","colour":1}}}`, []string{`flags.a: unknown field(s) colour`}},
		{"bad state", `{"flags":{"a":{"state":"ON","variants":{"on":true}}}}`, []string{`flags.a.state: "ON" is not allowed (allowed: ENABLED, DISABLED)`}},
		{"default not a variant", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"blue"}}}`, []string{`flags.a.defaultVariant: "blue" is not a variant (have: off, on)`}},
		{"mixed types", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":"no"}}}}`, []string{`flags.a.variants: variants must share one type (off: string, on: boolean)`}},
		{"unknown operator", `{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true},"targeting":{"if":[{"iff":[1]},"on",null]}}}}`, []string{`flags.checkout.targeting.if[0]: unknown operator "iff"`}},
		{"cycle", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"prerequisites":{"b":"on"}},"b":{"state":"ENABLED","variants":{"on":true},"prerequisites":{"a":"on"}}}}`, []string{`flags.a.prerequisites: cycle a → b → a`}},
		{"undefined ref", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"targeting":{"if":[{"$ref":"emailDomain"},"on",null]}}}}`, []string{`$evaluators.emailDomain: referenced but not defined`}},
		{"pennon fields", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"expires":"soon","propagation":"fast","failMode":"closed","systems":[""]}}}`, []string{
			`flags.a.expires: "soon" is not an RFC 3339 date`,
			`flags.a.propagation: "fast" is not allowed (allowed: always-fresh, background-refresh, cache-first)`,
			`flags.a.safeVariant: required when failMode is closed`,
			`flags.a.systems[0]: must not be empty`}},
		{"safe variant", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"safeVariant":"x"}}}`, []string{`flags.a.safeVariant: "x" is not a variant (have: on)`}},
		{"prerequisite variant", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"prerequisites":{"b":"x"}},"b":{"state":"ENABLED","variants":{"on":true}}}}`, []string{`flags.a.prerequisites.b: "x" is not a variant of b (have: on)`}},
		{"metadata type", `{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"metadata":{"x":[1]}}}}`, []string{`flags.a.metadata.x: metadata values must be string, number or boolean, got array`}},
		{"truncated", `{"flags":`, []string{`invalid JSON: the document ends before it is complete`}},
		{"syntax", "{\n  \"flags\": {,}}", []string{`invalid JSON at line 2, column 13: invalid character ','`}},
		{"not an object", `[1]`, []string{`the document must be a JSON object with a flags object, got array`}},
		{"empty", ``, []string{`the document is empty`}},
		{"many at once", `{"flags":{"a":{"state":"X","variants":{}},"b":{"state":"ENABLED"}}}`, []string{`flags.a.state`, `flags.a.variants: a flag needs at least one variant`, `flags.b.variants: required`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			msg := ve.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("missing %q in:\n%s", w, msg)
				}
			}
		})
	}
}

func TestApply(t *testing.T) {
	data, _ := os.ReadFile("../examples/basic.json")
	doc, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	before := doc.Hash()
	next, err := doc.Apply(&Changeset{Changes: []Change{
		{Flag: "banner-text", Op: OpPut, Definition: []byte(`{"state":"ENABLED","variants":{"a":"A"},"defaultVariant":"a"}`)},
		{Flag: "old-feature", Op: OpDelete},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if doc.Hash() != before || doc.Flag("old-feature") == nil {
		t.Fatal("Apply modified the original document")
	}
	if next.Flag("old-feature") != nil || *next.Flag("banner-text").DefaultVariant != "a" {
		t.Fatal("changes not applied")
	}
	_, err = doc.Apply(&Changeset{Changes: []Change{
		{Flag: "banner-text", Op: OpPut, Definition: []byte(`{"state":"ENABLED","variants":{"a":"A"},"defaultVariant":"b"}`)},
		{Flag: "nope", Op: OpDelete},
	}})
	if err == nil || !strings.Contains(err.Error(), "flags.nope: cannot delete") {
		t.Fatalf("err = %v", err)
	}
	s, _ := next.Compile(7)
	if r := s.Evaluate("banner-text", evaluator.NewContext()); string(r.ValueJSON) != `"A"` || s.Version() != 7 {
		t.Fatalf("compiled %+v", r)
	}
}

func FuzzParseDocument(f *testing.F) {
	for _, p := range []string{"../examples/checkout.json", "../examples/basic.json"} {
		data, _ := os.ReadFile(p)
		f.Add(data)
	}
	f.Add([]byte(`{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"targeting":{"$ref":"x"}}},"$evaluators":{"x":{"$ref":"x"}}}`))
	f.Add([]byte(`{"flags":{"a":{"state":"ENABLED","variants":{"on":1e999}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if err != nil {
			return
		}
		before := string(doc.Canonical())
		if _, err := doc.Compile(1); err != nil {
			t.Fatalf("a valid document must compile: %v", err)
		}
		if string(doc.Canonical()) != before {
			t.Fatal("Compile modified the document")
		}
		again, err := Parse(doc.Canonical())
		if err != nil {
			t.Fatalf("canonical form must parse: %v", err)
		}
		// The hash is a function of the canonical form, in both formats.
		if again.Hash() != doc.Hash() || !again.MatchesHash(LegacyDocumentHash([]byte(before))) || !doc.MatchesHash(again.HashLike(legacyHash)) {
			t.Fatalf("hash %s, of the re-parsed canonical form %s", doc.Hash(), again.Hash())
		}
	})
}
