package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/evaluator"
)

// fastCases are documents the fast path must read exactly as the exact
// path does, chosen for what a hand-written decoder and encoder get wrong:
// escapes, non-ASCII, U+2028, HTML characters, numbers as written, empty
// containers, null where null is allowed, nesting.
var fastCases = map[string]string{
	"plain":     `{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}`,
	"schema":    `{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"a":{"state":"DISABLED","variants":{"x":1},"defaultVariant":"x"}}}`,
	"numbers":   `{"flags":{"n":{"state":"ENABLED","variants":{"a":1.50,"b":-0,"c":1e3,"d":2E-7,"e":12345678901234567890,"f":0.0},"defaultVariant":"a"}}}`,
	"escapes":   `{"flags":{"s":{"state":"ENABLED","variants":{"q\"uote":"a\\b\/c\n\t\r\b\f","u":"\u00e9\u2028\u2029\ud83d\ude00<>&","ctl":"\u0001\u001f"},"defaultVariant":"u"}}}`,
	"unicode":   `{"flags":{"u-key":{"state":"ENABLED","variants":{"é":"ünï\u2028côdé","z":"\u2029"},"defaultVariant":"é"}}}`,
	"html":      `{"flags":{"h":{"state":"ENABLED","variants":{"<b>":"</script>&amp;","x":"y"},"defaultVariant":"<b>","description":"a < b && c > d"}}}`,
	"nulls":     `{"flags":{"n":{"state":"ENABLED","variants":{"a":"a"},"defaultVariant":null,"targeting":null}}}`,
	"empties":   `{"flags":{"e":{"state":"ENABLED","variants":{"a":{},"b":[],"c":""},"defaultVariant":"a","metadata":{},"prerequisites":{}}}}`,
	"nested":    `{"flags":{"o":{"state":"ENABLED","variants":{"obj":{"z":[1,{"b":2,"a":[true,null]}],"a":"x"}},"defaultVariant":"obj"}}}`,
	"targeting": `{"flags":{"t":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"email"},["a@x.com","b@x.com"]]},"on",{"fractional":[{"var":"targetingKey"},["on",25],["off",75]]}]}}}}`,
	"fields": `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"team-a","description":"d",
		"expires":"2030-01-01","metadata":{"n":1,"b":true,"s":"x"},"propagation":"always-fresh","failMode":"closed","safeVariant":"off"},
		"g":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","prerequisites":{"f":"on"},"propagation":"cache-first","failMode":"open"}}}`,
	"evaluators": `{"$evaluators":{"emails":{"in":[{"var":"email"},["a@x.com"]]}},"metadata":{"version":"1","n":2},
		"flags":{"r":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"$ref":"emails"},"on","off"]}}}}`,
	"whitespace": " \n{ \"flags\" : {\r\n \"w\" :\t{ \"state\" : \"ENABLED\" , \"variants\" : { \"a\" : [ 1 , 2 ] } , \"defaultVariant\" : \"a\" } } } \n",
	"no flags":   `{"flags":{}}`,
	// Flags fastFlag leaves to parser.flag inside the fast path.
	"owner null": `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","owner":null}}}`,
	"systems":    `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","systems":["web"]},"b":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x"}}}`,
	"fallback": `{"flags":{"a":{"state":"ENABLED","variants":{"x":1,"y":2},"defaultVariant":"x","targeting":{"if":[{"==":[{"var":"k"},"v"]},"y","x"]},
		"fallbackTargeting":{},"targetingBudget":"20us"}}}`,
	"retirement": `{"flags":{"a":{"state":"ENABLED","variants":{"x":1,"y":2},"defaultVariant":"x","retirement":"remove after the launch"}}}`,
	// Read by the fast path, rejected when linked and compiled: the same
	// problems either way.
	"missing prerequisite": `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","prerequisites":{"nope":"on"}}}}`,
	"prerequisite cycle": `{"flags":{"a":{"state":"ENABLED","variants":{"on":1},"defaultVariant":"on","prerequisites":{"b":"on"}},
		"b":{"state":"ENABLED","variants":{"on":1},"defaultVariant":"on","prerequisites":{"a":"on"}}}}`,
	"unknown default":     `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"y"}}}`,
	"mixed variant types": `{"flags":{"a":{"state":"ENABLED","variants":{"x":1,"y":"one"},"defaultVariant":"x"}}}`,
	"unknown operator":    `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","targeting":{"frobnicate":[1]}}}}`,
	"many":                string(generatedN(600)),
}

// slowCases must be left to the exact path (each is something the fast
// path declines as a whole: a problem to report, or input it cannot vouch
// for); the test checks that it does and that Parse's answer is the exact
// path's.
var slowCases = map[string]string{
	"duplicate flag":       `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x"},"a":{"state":"ENABLED","variants":{"x":2},"defaultVariant":"x"}}}`,
	"duplicate nested":     `{"flags":{"a":{"state":"ENABLED","variants":{"x":{"k":1,"k":2}},"defaultVariant":"x"}}}`,
	"unknown top":          `{"flags":{},"extra":1}`,
	"trailing":             `{"flags":{}} x`,
	"invalid utf8":         "{\"flags\":{\"a\":{\"state\":\"ENABLED\",\"variants\":{\"x\":\"\xff\"},\"defaultVariant\":\"x\"}}}",
	"lone surrogate":       `{"flags":{"a":{"state":"ENABLED","variants":{"x":"\ud800"},"defaultVariant":"x"}}}`,
	"state null":           `{"flags":{"a":{"state":null,"variants":{"x":1},"defaultVariant":"x"}}}`,
	"bad key":              `{"flags":{"a b":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x"}}}`,
	"variant null":         `{"flags":{"a":{"state":"ENABLED","variants":{"x":null,"y":1},"defaultVariant":"y"}}}`,
	"not json":             `{"flags":`,
	"bad number":           `{"flags":{"a":{"state":"ENABLED","variants":{"x":01},"defaultVariant":"x"}}}`,
	"closed without safe":  `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","failMode":"closed"}}}`,
	"bom":                  "\ufeff{\"flags\":{}}",
	"missing flags":        `{"metadata":{}}`,
	"unknown $ref":         `{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"x","targeting":{"if":[{"$ref":"nope"},"x",null]}}}}`,
	"duplicate evaluators": `{"$evaluators":{"a":{"var":"x"},"a":{"var":"y"}},"flags":{}}`,
}

// testbedDocs returns the flag files of the vendored flagd test bed and the
// examples: real documents written by other people.
func testbedDocs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, glob := range []string{"testdata/flagd-testbed/flags/*.json", "testdata/flagd-testbed/evaluator/flags/*.json", "../examples/*.json"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[f] = data
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d test bed and example documents", len(out))
	}
	return out
}

// compareFastExact parses data both ways and fails if the fast path accepted
// it but built anything different. It reports whether the fast path took it.
func compareFastExact(t testing.TB, data []byte) bool {
	t.Helper()
	fast, fp, pre, ok := parseFast(data, true)
	exact, ep := parseExact(data)
	if !ok {
		return false
	}
	if len(fp.problems) > 0 {
		t.Fatalf("fast path accepted a document with problems %v", fp.problems)
	}
	if exact == nil || len(ep.problems) > 0 {
		t.Fatalf("fast path accepted what the exact path rejects: %v\n%s", ep.problems, data)
	}
	if fast.schema != exact.schema || !reflect.DeepEqual(fast.metadata, exact.metadata) || !reflect.DeepEqual(fast.evaluators, exact.evaluators) {
		t.Fatalf("document fields differ: fast %q %v %v, exact %q %v %v", fast.schema, fast.metadata, fast.evaluators, exact.schema, exact.metadata, exact.evaluators)
	}
	fk, ek := append([]string(nil), fast.keys...), append([]string(nil), exact.keys...)
	slices.Sort(fk)
	slices.Sort(ek)
	if !reflect.DeepEqual(fk, ek) {
		t.Fatalf("keys differ: fast %v, exact %v", fk, ek)
	}
	for _, k := range ek {
		// The fast path compiled its flags as it read them and let their
		// decoded rules go; sameAnswers below checks what they compiled to.
		f, e := fast.Flag(k), *exact.Flag(k)
		e.decoded = decodedRules{}
		if !reflect.DeepEqual(f, &e) {
			fj, _ := json.Marshal(f)
			ej, _ := json.Marshal(e)
			t.Fatalf("flag %q differs:\nfast  %s canon %s\nexact %s canon %s", k, fj, f.canon, ej, e.canon)
		}
		if !bytes.Equal(f.canon, canonicalJSON(&e)) {
			t.Fatalf("flag %q: fast canonical %s, encoding/json %s", k, f.canon, canonicalJSON(&e))
		}
	}
	fd, ferr := finishParse(fast, &fp, pre)
	ed, eerr := finishParse(exact, &ep, nil)
	if (ferr == nil) != (eerr == nil) || ferr != nil && ferr.Error() != eerr.Error() {
		t.Fatalf("checks differ: fast %v, exact %v", ferr, eerr)
	}
	if fd != nil && !bytes.Equal(fd.Canonical(), ed.Canonical()) {
		t.Fatalf("canonical documents differ:\nfast  %s\nexact %s", fd.Canonical(), ed.Canonical())
	}
	if fd != nil {
		sameAnswers(t, fd, ed)
	}
	return true
}

// answerContexts are the contexts sameAnswers evaluates every flag with:
// empty, and ones that match the test documents' rules.
var answerContexts = []map[string]any{
	{},
	{"targetingKey": "user-1", "email": "a@x.com", "country": "DE", "k": "v"},
	{"targetingKey": "user-2", "email": "ann@pennon.dev", "country": "SE", "plan": "premium"},
}

// sameAnswers fails unless both documents' compiled snapshots answer every
// flag alike for every answerContexts context.
func sameAnswers(t testing.TB, a, b *Document) {
	t.Helper()
	sa, err := a.Compile(1)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Compile(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range a.keys {
		for _, c := range answerContexts {
			ra, rb := sa.Evaluate(k, evaluator.ContextFromMap(c)), sb.Evaluate(k, evaluator.ContextFromMap(c))
			if !reflect.DeepEqual(ra, rb) {
				t.Fatalf("flag %q, context %v: fast path answers %+v, exact path %+v", k, c, ra, rb)
			}
		}
	}
}

func TestParseFastMatchesExact(t *testing.T) {
	for name, doc := range fastCases {
		t.Run(name, func(t *testing.T) {
			if !compareFastExact(t, []byte(doc)) {
				_, ep := parseExact([]byte(doc))
				t.Fatalf("the fast path declined a plain document (exact path problems: %v)", ep.problems)
			}
		})
	}
	// Outside the cases written for parser.flag, fastFlag itself reads
	// every flag (the comparison above would pass if it declined them all).
	for name, doc := range fastCases {
		if name == "owner null" || name == "systems" || name == "fallback" || name == "retirement" {
			continue
		}
		var top struct{ Flags map[string]json.RawMessage }
		if err := json.Unmarshal([]byte(doc), &top); err != nil {
			t.Fatal(err)
		}
		for k, def := range top.Flags {
			if fastFlag(k, def, new(fastWorker)) == nil {
				t.Errorf("%s: fastFlag declined flag %q: %s", name, k, def)
			}
		}
	}
	fastN := 0
	for name, doc := range testbedDocs(t) {
		t.Run(name, func(t *testing.T) {
			if compareFastExact(t, doc) {
				fastN++
			}
		})
	}
	if fastN == 0 {
		t.Fatal("the fast path took none of the test bed's documents")
	}
}

func TestParseFastDeclines(t *testing.T) {
	for name, doc := range slowCases {
		t.Run(name, func(t *testing.T) {
			if _, _, _, ok := parseFast([]byte(doc), true); ok {
				t.Fatalf("fast path accepted %s", doc)
			}
			// Parse then answers exactly as the exact path does.
			exact, ep := parseExact([]byte(doc))
			want := ""
			if exact == nil {
				want = (&ValidationError{Problems: ep.problems}).Error()
			} else if _, err := finishParse(exact, &ep, nil); err != nil {
				want = err.Error()
			}
			got := ""
			if _, err := Parse([]byte(doc)); err != nil {
				got = err.Error()
			}
			if got != want {
				t.Fatalf("Parse says %q, the exact path %q", got, want)
			}
		})
	}
}

// TestParseFastAliasesCanonical: a flag's Variants and Targeting are views
// of its canonical JSON, capped so an append cannot write into it.
func TestParseFastAliasesCanonical(t *testing.T) {
	doc, err := Parse([]byte(fastCases["targeting"]))
	if err != nil {
		t.Fatal(err)
	}
	f := doc.Flag("t")
	before := string(f.canon)
	_ = append(f.Targeting, "garbage"...)
	_ = append(f.Variants["on"], "garbage"...)
	if string(f.canon) != before {
		t.Fatalf("appending to a view changed the canonical JSON: %s", f.canon)
	}
	if !strings.Contains(before, string(f.Targeting)) || string(f.Variants["on"]) != "true" {
		t.Fatalf("views: targeting %s, on %s", f.Targeting, f.Variants["on"])
	}
}

func TestAppendCanonicalMatchesEncoder(t *testing.T) {
	var values []any
	for _, doc := range fastCases {
		var v any
		if err := decodeJSON([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	for _, s := range []string{"", "plain", "\x00\x01\x1f\x7f", "\b\f\n\r\t", "\"\\/", "<>&", "\u2028\u2029", "é😀", "\xff\xfe invalid", "a\u00ffb", "\ufffd"} {
		values = append(values, s, map[string]any{s: s}, []any{s})
	}
	values = append(values, json.Number("-1.5e10"), true, false, nil, []any{}, map[string]any{})
	for _, v := range values {
		got, ok := appendCanonical(nil, v)
		if !ok {
			t.Fatalf("appendCanonical declined %#v", v)
		}
		if want := canonicalJSON(v); !bytes.Equal(got, want) {
			t.Fatalf("appendCanonical(%#v) = %s, encoding/json %s", v, got, want)
		}
	}
	if _, ok := appendCanonical(nil, 1.5); ok {
		t.Fatal("a float64 is not a decoded value: appendCanonical must decline it")
	}
}

// FuzzParseFast: on any input the fast path either declines or builds what
// the exact path builds; it never panics.
func FuzzParseFast(f *testing.F) {
	for _, doc := range fastCases {
		if len(doc) < 4096 {
			f.Add([]byte(doc))
		}
	}
	for _, doc := range slowCases {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		compareFastExact(t, data)
		// ParseCompiled agrees with Parse on acceptance, error and hash.
		_, hash, err := ParseCompiled(data, 1)
		doc, perr := Parse(data)
		if (err == nil) != (perr == nil) || err != nil && err.Error() != perr.Error() {
			t.Fatalf("ParseCompiled error %v, Parse error %v", err, perr)
		}
		if perr == nil && hash != doc.Hash() {
			t.Fatalf("ParseCompiled hash %s, Parse's %s", hash, doc.Hash())
		}
	})
}

// TestValidFlagKey holds the loop to the rule it replaced, the regexp
// ^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$.
func TestValidFlagKey(t *testing.T) {
	rule := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$`)
	keys := []string{"", "a", "A-b.c_d", "_x", "0", "-a", ".a", "a b", "a/b", "é", "a\x00", strings.Repeat("k", 200), strings.Repeat("k", 201),
		"new-checkout.v2", "a..b", "a-", "Z9", "a\n"}
	for c := 0; c < 256; c++ {
		keys = append(keys, string(rune(c)), "a"+string([]byte{byte(c)}))
	}
	for _, k := range keys {
		if got, want := validFlagKey(k), rule.MatchString(k); got != want {
			t.Errorf("validFlagKey(%q) = %v, the rule says %v", k, got, want)
		}
	}
}

// TestParseCompiledMatchesParse: ParseCompiled gives what Parse, Compile
// and Hash give — the same hash, the same answers, the same error — for
// every test document, valid or not, on the fast path or not.
func TestParseCompiledMatchesParse(t *testing.T) {
	docs := map[string][]byte{}
	for name, doc := range fastCases {
		docs[name] = []byte(doc)
	}
	for name, doc := range slowCases {
		docs["slow "+name] = []byte(doc)
	}
	for name, doc := range testbedDocs(t) {
		docs[name] = doc
	}
	docs["many, 3 workers' worth"] = generatedN(2000)
	for name, data := range docs {
		t.Run(name, func(t *testing.T) {
			snap, hash, err := ParseCompiled(data, 7)
			doc, perr := Parse(data)
			if (err == nil) != (perr == nil) || err != nil && err.Error() != perr.Error() {
				t.Fatalf("ParseCompiled error %v, Parse error %v", err, perr)
			}
			if perr != nil {
				return
			}
			if hash != doc.Hash() {
				t.Fatalf("hash %s, Parse's %s", hash, doc.Hash())
			}
			want, err := doc.Compile(7)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Version() != 7 || !slices.Equal(snap.Keys(), want.Keys()) {
				t.Fatalf("snapshot v%d keys %v, want v7 %v", snap.Version(), snap.Keys(), want.Keys())
			}
			for _, k := range want.Keys() {
				for _, c := range answerContexts {
					if a, b := snap.Evaluate(k, evaluator.ContextFromMap(c)), want.Evaluate(k, evaluator.ContextFromMap(c)); !reflect.DeepEqual(a, b) {
						t.Fatalf("flag %q, context %v: %+v, want %+v", k, c, a, b)
					}
				}
			}
		})
	}
}
