package config

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func mustParseFile(t testing.TB, path string) *Document {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

func TestApplyProblems(t *testing.T) {
	on := json.RawMessage(`{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`)
	tests := []struct {
		name string
		cs   Changeset
		want []string
	}{
		{"duplicate flag", Changeset{Changes: []Change{{Flag: "x", Op: OpPut, Definition: on}, {Flag: "x", Op: OpDelete}}},
			[]string{`changes[1].flag: flag "x" appears more than once in one changeset`}},
		{"bad op", Changeset{Changes: []Change{{Flag: "x", Op: "patch"}}},
			[]string{`changes[0].op: "patch" is not allowed (allowed: put, delete)`}},
		{"put without definition", Changeset{Changes: []Change{{Flag: "x", Op: OpPut}}},
			[]string{`changes[0].definition: required for put`}},
		{"invalid definition", Changeset{Changes: []Change{{Flag: "x", Op: OpPut, Definition: json.RawMessage(`{"state":"ON","variants":{"on":true}}`)}}},
			[]string{`flags.x.state: "ON" is not allowed`}},
		{"delete a prerequisite", Changeset{Changes: []Change{{Flag: "payment-api-v2", Op: OpDelete}}},
			[]string{`flags.new-checkout-ui.prerequisites`}},
		{"bad metadata", Changeset{Metadata: map[string]any{"x": []any{1}}},
			[]string{`metadata.x: metadata values must be string, number or boolean, got array`}},
		{"undefined evaluator", Changeset{Evaluators: map[string]json.RawMessage{"other": json.RawMessage(`{"==":[1,1]}`)}},
			[]string{`$evaluators.internalUser: referenced but not defined`}},
	}
	doc := mustParseFile(t, "../examples/checkout.json")
	before := string(doc.Canonical())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := doc.Apply(&tc.cs)
			if err == nil {
				t.Fatal("Apply accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if string(doc.Canonical()) != before {
				t.Fatal("a failed Apply modified the document")
			}
		})
	}
}

func TestApplyMetadataAndEvaluators(t *testing.T) {
	doc := mustParseFile(t, "../examples/checkout.json")
	next, err := doc.Apply(&Changeset{
		Metadata:   map[string]any{"flagSet": "checkout", "team": "payments"},
		Evaluators: map[string]json.RawMessage{"internalUser": json.RawMessage(`{"ends_with":[{"var":"email"},"@example.com"]}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if next.Metadata()["team"] != "payments" || doc.Metadata()["team"] != "commerce" {
		t.Fatalf("metadata: next %v, old %v", next.Metadata(), doc.Metadata())
	}
	if next.Hash() == doc.Hash() {
		t.Fatal("evaluator change kept the hash")
	}
	if next.Len() != doc.Len() {
		t.Fatalf("flags changed: %d → %d", doc.Len(), next.Len())
	}
}
