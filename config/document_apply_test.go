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

// applyByFullParse is the reference for Apply: merge the changeset into the
// whole document as JSON and parse everything again.
func applyByFullParse(t *testing.T, d *Document, cs *Changeset) (*Document, error) {
	t.Helper()
	var top map[string]any
	if err := decodeJSON(d.Canonical(), &top); err != nil {
		t.Fatal(err)
	}
	flags := top["flags"].(map[string]any)
	for _, ch := range cs.Changes {
		if ch.Op == OpDelete {
			delete(flags, ch.Flag)
			continue
		}
		var def any
		if err := decodeJSON(ch.Definition, &def); err != nil {
			t.Fatal(err)
		}
		flags[ch.Flag] = def
	}
	if cs.Metadata != nil {
		top["metadata"] = cs.Metadata
	}
	if cs.Evaluators != nil {
		top["$evaluators"] = cs.Evaluators
	}
	return Parse(canonicalJSON(top))
}

func TestApplyMatchesFullParse(t *testing.T) {
	put := func(key, def string) Change { return Change{Flag: key, Op: OpPut, Definition: json.RawMessage(def)} }
	del := func(key string) Change { return Change{Flag: key, Op: OpDelete} }
	tests := []struct {
		name  string
		cs    Changeset
		valid bool
	}{
		{"new flag with a prerequisite", Changeset{Changes: []Change{put("wallet", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"express-checkout":"on"}}`)}}, true},
		{"new cycle through a changed flag", Changeset{Changes: []Change{put("payment-api-v2", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"express-checkout":"on"}}`)}}, false},
		{"delete a prerequisite", Changeset{Changes: []Change{del("payment-api-v2")}}, false},
		{"delete a leaf", Changeset{Changes: []Change{del("express-checkout")}}, true},
		{"delete a chain", Changeset{Changes: []Change{del("express-checkout"), del("new-checkout-ui"), del("payment-api-v2")}}, true},
		{"remove a required variant", Changeset{Changes: []Change{put("performance-mode", `{"state":"ENABLED","variants":{"balanced":"balanced"},"defaultVariant":"balanced"}`)}}, false},
		{"undefined $ref", Changeset{Changes: []Change{put("x", `{"state":"ENABLED","variants":{"on":true},"targeting":{"if":[{"$ref":"nope"},"on",null]}}`)}}, false},
		{"defined $ref", Changeset{Changes: []Change{put("x", `{"state":"ENABLED","variants":{"on":true},"targeting":{"if":[{"$ref":"internalUser"},"on",null]}}`)}}, true},
		{"evaluators replaced", Changeset{Evaluators: map[string]json.RawMessage{"internalUser": json.RawMessage(`{"==":[{"var":"email"},"a@b.c"]}`)}}, true},
		{"evaluator removed", Changeset{Evaluators: map[string]json.RawMessage{}}, false},
		{"bad targeting", Changeset{Changes: []Change{put("x", `{"state":"ENABLED","variants":{"on":true},"targeting":{"iff":[]}}`)}}, false},
		{"metadata only", Changeset{Metadata: map[string]any{"team": "x"}}, true},
		{"replace and depend in one changeset", Changeset{Changes: []Change{
			put("payment-api-v1", `{"state":"ENABLED","variants":{"yes":true,"no":false},"defaultVariant":"yes"}`),
			put("legacy-payment", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"payment-api-v1":"yes"}}`)}}, true},
	}
	doc := mustParseFile(t, "../examples/checkout.json")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := doc.Apply(&tc.cs)
			want, wantErr := applyByFullParse(t, doc, &tc.cs)
			if (err == nil) != tc.valid || (wantErr == nil) != tc.valid {
				t.Fatalf("valid=%v: Apply err %v; full parse err %v", tc.valid, err, wantErr)
			}
			if err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					if !strings.Contains(wantErr.Error(), line) {
						t.Errorf("Apply reported %q, full parse did not:\n%v", line, wantErr)
					}
				}
				return
			}
			if string(got.Canonical()) != string(want.Canonical()) {
				t.Fatalf("Apply and full parse differ:\n%s\n%s", got.Canonical(), want.Canonical())
			}
			if _, err := got.Compile(2); err != nil {
				t.Fatalf("applied document does not compile: %v", err)
			}
		})
	}
}

// FuzzApply checks that the incremental Apply accepts exactly what a full
// re-parse of the merged document accepts, and produces the same document
// with the same hash (rebuilt from the parent's buckets) in both formats.
func FuzzApply(f *testing.F) {
	f.Add("wallet", []byte(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"express-checkout":"on"}}`), "")
	f.Add("payment-api-v2", []byte(`{"state":"ENABLED","variants":{"on":true},"prerequisites":{"new-checkout-ui":"on"}}`), "legacy-payment")
	f.Add("x", []byte(`{"state":"ENABLED","variants":{"on":true},"targeting":{"if":[{"$ref":"internalUser"},"on",null]}}`), "payment-api-v1")
	f.Add("performance-mode", []byte(`{"state":"DISABLED","variants":{"safe":"safe"}}`), "")
	doc := mustParseFile(f, "../examples/checkout.json")
	_ = doc.Hash() // so each result's hash is built from doc's buckets
	f.Fuzz(func(t *testing.T, key string, def []byte, deleteKey string) {
		cs := &Changeset{Changes: []Change{{Flag: key, Op: OpPut, Definition: def}}}
		if deleteKey != "" && deleteKey != key {
			cs.Changes = append(cs.Changes, Change{Flag: deleteKey, Op: OpDelete})
		}
		got, err := doc.Apply(cs)
		var probe any
		if decodeJSON(def, &probe) != nil || len(duplicateKeys(def, "")) > 0 || (deleteKey != "" && deleteKey != key && doc.Flag(deleteKey) == nil) {
			if err == nil {
				t.Fatal("Apply accepted an undecodable definition, duplicate keys or a delete of a missing flag")
			}
			return
		}
		want, wantErr := applyByFullParse(t, doc, cs)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("Apply err %v; full parse err %v", err, wantErr)
		}
		if err == nil && string(got.Canonical()) != string(want.Canonical()) {
			t.Fatalf("Apply and full parse differ:\n%s\n%s", got.Canonical(), want.Canonical())
		}
		if err == nil && (got.Hash() != want.Hash() || !got.MatchesHash(LegacyDocumentHash(want.Canonical()))) {
			t.Fatalf("hash after Apply %s, full parse %s (or the legacy hashes differ)", got.Hash(), want.Hash())
		}
	})
}
