package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, doc string) *Document {
	t.Helper()
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return d
}

const planFlag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`

// TestPlanApply checks what a plan commits and what it says, case by case.
func TestPlanApply(t *testing.T) {
	cur := mustParse(t, `{"metadata":{"team":"a"},"$evaluators":{"e":true,"g":false},"flags":{"a":`+planFlag+`,"b":`+planFlag+`}}`)
	head := &State{Env: "dev", Version: 7, Doc: cur, flagVersions: flagVersionsFrom(map[string]uint64{"a": 3, "b": 7}), Hash: cur.Hash()}
	tests := []struct {
		name, file string
		prune      bool
		bases      map[string]uint64
		changes    []Change // definitions left out of the comparison
		evals      []string // names in the new $evaluators (nil: unchanged)
		metadata   map[string]any
		kept       []string
		note       string // in the notes
	}{
		{name: "same set", file: `{"metadata":{"team":"a"},"$evaluators":{"e":true,"g":false},"flags":{"a":` + planFlag + `,"b":` + planFlag + `}}`},
		{name: "missing flag and evaluator kept", file: `{"$evaluators":{"e":true},"flags":{"a":` + planFlag + `}}`,
			kept: []string{"b"}, note: "$evaluators.g is not in the file and is kept"},
		{name: "prune deletes with the flag's base", file: `{"$evaluators":{"e":true},"flags":{"a":` + planFlag + `}}`, prune: true,
			changes: []Change{{Flag: "b", Op: OpDelete, BaseVersion: 7}}, evals: []string{"e"}, note: "flag-set metadata: the environment's is kept"},
		{name: "prune cannot empty $evaluators", file: `{"flags":{"a":` + planFlag + `,"b":` + planFlag + `}}`, prune: true,
			note: "a changeset cannot empty $evaluators"},
		{name: "caller's bases win", file: `{"flags":{"a":` + planFlag + `,"b":` + planFlag + `,"c":` + planFlag + `}}`, bases: map[string]uint64{"a": 3, "b": 5},
			changes: []Change{{Flag: "c", Op: OpPut}}, kept: nil},
		{name: "metadata replaced, evaluator changed", file: `{"metadata":{"team":"b"},"$evaluators":{"e":false},"flags":{"a":` + planFlag + `,"b":` + planFlag + `}}`,
			evals: []string{"e", "g"}, metadata: map[string]any{"team": "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanApply(head, mustParse(t, tc.file), tc.prune, tc.bases)
			if err != nil {
				t.Fatal(err)
			}
			var got []Change
			for _, c := range p.Changes {
				got = append(got, Change{Flag: c.Flag, Op: c.Op, BaseVersion: c.BaseVersion})
			}
			if !reflect.DeepEqual(got, tc.changes) {
				t.Fatalf("changes %+v, want %+v", got, tc.changes)
			}
			var names []string
			for k := range p.NewEvals {
				names = append(names, k)
			}
			if len(names) > 1 && names[0] > names[1] {
				names[0], names[1] = names[1], names[0]
			}
			if !reflect.DeepEqual(names, tc.evals) || !reflect.DeepEqual(p.Metadata, tc.metadata) {
				t.Fatalf("evaluators %v metadata %v, want %v %v", names, p.Metadata, tc.evals, tc.metadata)
			}
			if tc.kept == nil {
				tc.kept = []string{}
			}
			if !reflect.DeepEqual(p.Kept, tc.kept) {
				t.Fatalf("kept %v, want %v", p.Kept, tc.kept)
			}
			if tc.note != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tc.note) {
				t.Fatalf("notes %q lack %q", p.Notes, tc.note)
			}
			if p.Empty() != (len(tc.changes) == 0 && tc.evals == nil && tc.metadata == nil) {
				t.Fatalf("Empty() = %v", p.Empty())
			}
		})
	}
	// A file valid on its own whose result, with the flags it keeps, is
	// invalid is refused with the problem's path.
	dep := mustParse(t, `{"flags":{"dep":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","prerequisites":{"b":"on"}},"b":`+planFlag+`}}`)
	st := &State{Env: "dev", Version: 1, Doc: dep, flagVersions: flagVersionsFrom(map[string]uint64{"dep": 1, "b": 1}), Hash: dep.Hash()}
	_, err := PlanApply(st, mustParse(t, `{"flags":{"b":{"state":"ENABLED","variants":{"yes":true},"defaultVariant":"yes"}}}`), false, nil)
	if err == nil || !strings.Contains(err.Error(), "flags.dep.prerequisites.b") {
		t.Fatalf("a kept flag's prerequisite broken: %v", err)
	}
}

// TestPromotionEvaluators: the referenced evaluators travel, transitively;
// equal ones do not; a different same-named one is replaced and named.
func TestPromotionEvaluators(t *testing.T) {
	src := mustParse(t, `{"$evaluators":{"outer":{"or":[{"$ref":"inner"},false]},"inner":{"==":[{"var":"x"},1]},"unused":true},"flags":{
		"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"$ref":"outer"},"on","off"]}},
		"plain":`+planFlag+`}}`)
	tests := []struct {
		name     string
		dst      string
		flags    []string
		want     []string
		replaced []string
	}{
		{"missing ones travel transitively", `{"flags":{}}`, []string{"f"}, []string{"inner", "outer"}, nil},
		{"equal ones are not a change", `{"$evaluators":{"outer":{"or":[{"$ref":"inner"},false]},"inner":{"==":[{"var":"x"},1]}},"flags":{}}`, []string{"f"}, nil, nil},
		{"different ones are replaced", `{"$evaluators":{"outer":{"or":[{"$ref":"inner"},false]},"inner":true,"mine":false},"flags":{}}`, []string{"f"}, []string{"inner", "mine", "outer"}, []string{"inner"}},
		{"no $ref, no change", `{"flags":{}}`, []string{"plain"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, replaced := PromotionEvaluators(src, mustParse(t, tc.dst), tc.flags)
			var names []string
			if evs != nil {
				names = keysOf(evs)
			}
			if !reflect.DeepEqual(names, tc.want) || !reflect.DeepEqual(replaced, tc.replaced) {
				t.Fatalf("got %v replaced %v, want %v %v", names, replaced, tc.want, tc.replaced)
			}
			if evs != nil && string(evs["inner"]) != `{"==":[{"var":"x"},1]}` {
				t.Fatalf("inner = %s", evs["inner"])
			}
		})
	}
}

// TestExportParsesToTheSameSet: Export is canonical and stable.
func TestExportParsesToTheSameSet(t *testing.T) {
	d := mustFile(t, "../examples/checkout.json")
	again, err := Parse(d.Export())
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Export()) != string(d.Export()) || !json.Valid(d.Export()) {
		t.Fatal("export is not stable")
	}
	if e := Empty().Export(); string(e) != `{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{}}` {
		t.Fatalf("empty export: %s", e)
	}
}

func mustFile(t *testing.T, path string) *Document {
	t.Helper()
	return mustParseFile(t, path)
}
