package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/evaluator"
)

// randomFlag is flag i's definition with random content: static, targeted,
// fractional or $ref rules, sometimes disabled, with up to two
// prerequisites among others (which may make a cycle: Apply must then
// refuse it exactly as a full parse does).
func randomFlag(rng *rand.Rand, others []string) string {
	variants := `{"on":true,"off":false}`
	var targeting string
	switch rng.IntN(5) {
	case 0:
		targeting = `,"targeting":{"if":[{"ends_with":[{"var":"email"},"@pennon.dev"]},"on","off"]}`
	case 1:
		targeting = `,"targeting":{"fractional":[{"cat":[{"var":"$flagd.flagKey"},{"var":"targetingKey"}]},["on",50],["off",50]]}`
	case 2:
		targeting = `,"targeting":{"if":[{"$ref":"internal"},"on",null]}`
	case 3:
		targeting = fmt.Sprintf(`,"targeting":{"if":[{">":[{"var":"age"},%d]},"on","off"]}`, rng.IntN(60))
	}
	state := "ENABLED"
	if rng.IntN(8) == 0 {
		state = "DISABLED"
	}
	prereqs := map[string]string{}
	if len(others) > 0 {
		for range rng.IntN(3) {
			want := "on"
			if rng.IntN(4) == 0 {
				want = "missing-variant" // an invalid prerequisite now and then
			}
			prereqs[others[rng.IntN(len(others))]] = want
		}
	}
	pre := ""
	if len(prereqs) > 0 {
		b, _ := json.Marshal(prereqs)
		pre = `,"prerequisites":` + string(b)
	}
	return fmt.Sprintf(`{"state":%q,"variants":%s,"defaultVariant":"off","metadata":{"rev":%d}%s%s}`,
		state, variants, rng.IntN(1000), targeting, pre)
}

// randomDocument has n flags whose prerequisites point only at flags with a
// lower index, so it has no cycle.
func randomDocument(rng *rand.Rand, n int) []byte {
	var b strings.Builder
	b.WriteString(`{"$evaluators":{"internal":{"ends_with":[{"var":"email"},"@pennon.dev"]}},"metadata":{"team":"core"},"flags":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		var lower []string
		for j := range i {
			if rng.IntN(n) < 3 {
				lower = append(lower, fmt.Sprintf("f%d", j))
			}
		}
		def := randomFlag(rng, lower)
		def = strings.ReplaceAll(def, `"missing-variant"`, `"on"`)
		fmt.Fprintf(&b, `"f%d":%s`, i, def)
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

var propertyContexts = []map[string]any{
	{},
	{"targetingKey": "user-1", "email": "a@pennon.dev", "age": 30.0},
	{"targetingKey": "user-2", "email": "b@example.com", "age": 70.0},
	{"targetingKey": "user-3", "age": 5.0},
}

// TestIncrementalMatchesFullRebuild applies random changesets one after
// another, each to the document (and compiled snapshot) the previous one
// produced, and checks every step against a full rebuild of the same flag
// set from JSON: the same accept/reject decision, a byte-identical
// canonical document, the same hash (built from the previous document's
// buckets, against a full build from the re-parsed canonical bytes) and
// legacy hash (also against encoding/json's own encoding of the
// document), the same keys and version, and the same answer, reads and
// cost for every flag and every context.
func TestIncrementalMatchesFullRebuild(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 16))
			doc, err := Parse(randomDocument(rng, 40))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := doc.Compile(1); err != nil {
				t.Fatal(err)
			}
			version := uint64(1)
			accepted := 0
			for step := range 100 {
				cs := randomChangeset(rng, doc, step)
				next, err := doc.Apply(cs)
				want, wantErr := applyByFullParse(t, doc, cs)
				if (err == nil) != (wantErr == nil) {
					t.Fatalf("step %d: Apply err %v; full rebuild err %v", step, err, wantErr)
				}
				if err != nil {
					for _, line := range strings.Split(err.Error(), "\n") {
						if strings.Contains(line, ": cycle ") {
							// With several cycles the searches may meet
							// another one first; both must report one.
							line = ": cycle "
						}
						if !strings.Contains(wantErr.Error(), line) {
							t.Fatalf("step %d: Apply reported %q, the full rebuild did not:\n%v", step, line, wantErr)
						}
					}
					continue
				}
				accepted++
				version++
				if doc.compiled.Load() != nil && cs.Metadata == nil && cs.Evaluators == nil && next.delta.Load() == nil {
					t.Fatalf("step %d: applied to a compiled document without remembering the change: Compile would rebuild everything", step)
				}
				if doc.tree.Load() != nil && next.hashFrom.Load() == nil {
					t.Fatalf("step %d: applied to a hashed document without remembering the change: Hash would rebuild every bucket", step)
				}
				compareDocuments(t, step, next, want)
				if rng.IntN(5) == 0 {
					// Not compiled: the next Apply starts without a base
					// snapshot and its Compile compiles everything.
					doc = next
					continue
				}
				got, err := next.Compile(version)
				if err != nil {
					t.Fatalf("step %d: incremental compile: %v", step, err)
				}
				full, err := want.Compile(version)
				if err != nil {
					t.Fatalf("step %d: full compile: %v", step, err)
				}
				compareSnapshots(t, step, got, full)
				doc = next
			}
			if accepted < 35 {
				t.Fatalf("only %d of 100 changesets were accepted: the test exercises too little", accepted)
			}
		})
	}
}

// randomChangeset puts, adds or deletes one to three flags; now and then it
// replaces $evaluators or the flag-set metadata.
func randomChangeset(rng *rand.Rand, doc *Document, step int) *Changeset {
	keys := doc.FlagKeys()
	cs := &Changeset{}
	switch rng.IntN(20) {
	case 0:
		cs.Evaluators = map[string]json.RawMessage{"internal": json.RawMessage(fmt.Sprintf(`{"ends_with":[{"var":"email"},"@%d.dev"]}`, step))}
		return cs
	case 1:
		cs.Metadata = map[string]any{"team": fmt.Sprintf("team-%d", step)}
		return cs
	}
	used := map[string]bool{}
	for range rng.IntN(3) + 1 {
		var key string
		switch {
		case rng.IntN(4) == 0 || len(keys) == 0:
			key = fmt.Sprintf("n%d-%d", step, rng.IntN(100))
		default:
			key = keys[rng.IntN(len(keys))]
		}
		if used[key] {
			continue
		}
		used[key] = true
		if rng.IntN(4) == 0 && doc.Flag(key) != nil {
			cs.Changes = append(cs.Changes, Change{Flag: key, Op: OpDelete})
			continue
		}
		cs.Changes = append(cs.Changes, Change{Flag: key, Op: OpPut, Definition: json.RawMessage(randomFlag(rng, keys))})
	}
	return cs
}

func compareDocuments(t *testing.T, step int, got, want *Document) {
	t.Helper()
	if !bytes.Equal(got.Canonical(), want.Canonical()) {
		t.Fatalf("step %d: canonical documents differ:\n%s\n%s", step, got.Canonical(), want.Canonical())
	}
	// The assembled encoding must be encoding/json's, byte for byte:
	// hashes already stored and signed were computed from it.
	flags := map[string]*FlagDoc{}
	for k, f := range got.flags.All() {
		flags[k] = f
	}
	encoded := canonicalJSON(canonicalDoc{Schema: got.schema, Evaluators: got.evaluators, Flags: flags, Metadata: got.metadata})
	if !bytes.Equal(got.Canonical(), encoded) {
		t.Fatalf("step %d: assembled canonical JSON differs from encoding/json's:\n%s\n%s", step, got.Canonical(), encoded)
	}
	if got.Hash() != want.Hash() || got.Hash() != mustDocumentHash(t, encoded) {
		t.Fatalf("step %d: hash %s, full rebuild %s, encoding/json %s", step, got.Hash(), want.Hash(), mustDocumentHash(t, encoded))
	}
	if g, w := got.HashLike("sha256:"), LegacyDocumentHash(encoded); g != w || !got.MatchesHash(w) || !got.MatchesHash(want.Hash()) {
		t.Fatalf("step %d: legacy hash %s, of encoding/json's bytes %s", step, g, w)
	}
	if !slices.Equal(got.FlagKeys(), want.FlagKeys()) {
		t.Fatalf("step %d: keys differ", step)
	}
	if g, w := maps.Collect(got.requiredBy.All()), maps.Collect(want.requiredBy.All()); !reflect.DeepEqual(g, w) {
		t.Fatalf("step %d: prerequisite index differs:\n%v\n%v", step, g, w)
	}
}

func compareSnapshots(t *testing.T, step int, got, want *evaluator.Snapshot) {
	t.Helper()
	if got.Version() != want.Version() || !slices.Equal(got.Keys(), want.Keys()) || got.Len() != want.Len() {
		t.Fatalf("step %d: snapshot v%d %d flags, full rebuild v%d %d flags", step, got.Version(), got.Len(), want.Version(), want.Len())
	}
	for _, k := range got.Keys() {
		gf, wf := got.Flag(k), want.Flag(k)
		if !slices.Equal(gf.Reads(), wf.Reads()) || gf.Cost() != wf.Cost() || gf.ReadsTime() != wf.ReadsTime() || gf.NeedsContext() != wf.NeedsContext() {
			t.Fatalf("step %d: flag %s: reads %v cost %d, full rebuild reads %v cost %d", step, k, gf.Reads(), gf.Cost(), wf.Reads(), wf.Cost())
		}
		for i, m := range propertyContexts {
			ctx := evaluator.ContextFromMap(m)
			g, w := got.Evaluate(k, ctx), want.Evaluate(k, ctx)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("step %d: flag %s context %d: %+v, full rebuild %+v", step, k, i, g, w)
			}
		}
	}
}
