package evaluator

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// spec builds a FlagSpec from a JSON flag definition (flagd format subset).
func spec(t testing.TB, key, def string) FlagSpec {
	t.Helper()
	var raw struct {
		State          string
		Variants       map[string]any
		DefaultVariant *string
		Targeting      any
		Metadata       map[string]any
		Prerequisites  map[string]string
		SafeVariant    string
	}
	d := json.NewDecoder(strings.NewReader(def))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		t.Fatalf("spec %s: %v", key, err)
	}
	s := FlagSpec{Key: key, Disabled: raw.State == "DISABLED", Targeting: raw.Targeting,
		Metadata: raw.Metadata, Prerequisites: raw.Prerequisites, SafeVariant: raw.SafeVariant}
	for n, v := range raw.Variants {
		s.Variants = append(s.Variants, VariantSpec{Name: n, Value: v})
	}
	if raw.DefaultVariant != nil {
		s.DefaultVariant, s.HasDefaultVariant = *raw.DefaultVariant, true
	}
	return s
}

func snap(t testing.TB, flags map[string]string) *Snapshot {
	t.Helper()
	var specs []FlagSpec
	for k, d := range flags {
		specs = append(specs, spec(t, k, d))
	}
	s, problems := NewSnapshot(1, specs, SnapshotOptions{Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if problems != nil {
		t.Fatalf("problems: %v", problems)
	}
	return s
}

func ctxOf(t testing.TB, js string) *Context {
	t.Helper()
	c := NewContext()
	if err := c.Decode([]byte(js), Limits{}); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return c
}

const colorVariants = `"variants": {"red": "red", "blue": "blue", "green": "green", "true": "T", "false": "F", "1": "one"}, "defaultVariant": "blue"`

// rule wraps a targeting rule in a string flag whose variant names cover
// what the rule may return.
func rule(r string) string {
	return `{"state": "ENABLED", ` + colorVariants + `, "targeting": ` + r + `}`
}

func TestOperators(t *testing.T) {
	tests := []struct {
		name    string
		rule    string
		ctx     string
		variant string
		reason  Reason
	}{
		{"var equality", `{"if": [{"==": [{"var": "color"}, "red"]}, "red", null]}`, `{"color": "red"}`, "red", ReasonTargetingMatch},
		{"var miss gives default", `{"if": [{"==": [{"var": "color"}, "red"]}, "red", null]}`, `{"color": "x"}`, "blue", ReasonDefault},
		{"dotted var", `{"if": [{"==": [{"var": "user.tier"}, "gold"]}, "red", "green"]}`, `{"user": {"tier": "gold"}}`, "red", ReasonTargetingMatch},
		{"var default", `{"var": ["missing", "green"]}`, `{}`, "green", ReasonTargetingMatch},
		{"array index", `{"var": "list.1"}`, `{"list": ["red", "green"]}`, "green", ReasonTargetingMatch},
		{"loose equality number string", `{"if": [{"==": [{"var": "n"}, "1"]}, "red", "green"]}`, `{"n": 1}`, "red", ReasonTargetingMatch},
		{"strict equality", `{"if": [{"===": [{"var": "n"}, "1"]}, "red", "green"]}`, `{"n": 1}`, "green", ReasonTargetingMatch},
		{"not equal", `{"if": [{"!=": [{"var": "n"}, 2]}, "red", "green"]}`, `{"n": 1}`, "red", ReasonTargetingMatch},
		{"strict not equal", `{"if": [{"!==": [{"var": "n"}, "1"]}, "red", "green"]}`, `{"n": 1}`, "red", ReasonTargetingMatch},
		{"not", `{"if": [{"!": {"var": "off"}}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"double not empty array", `{"if": [{"!!": [[]]}, "red", "green"]}`, `{}`, "green", ReasonTargetingMatch},
		{"and", `{"if": [{"and": [true, {"var": "a"}]}, "red", "green"]}`, `{"a": 1}`, "red", ReasonTargetingMatch},
		{"or", `{"if": [{"or": [false, {"var": "a"}]}, "red", "green"]}`, `{"a": 0}`, "green", ReasonTargetingMatch},
		{"less", `{"if": [{"<": [{"var": "age"}, 18]}, "red", "green"]}`, `{"age": 17}`, "red", ReasonTargetingMatch},
		{"between", `{"if": [{"<=": [18, {"var": "age"}, 65]}, "red", "green"]}`, `{"age": 65}`, "red", ReasonTargetingMatch},
		{"between outside", `{"if": [{"<": [18, {"var": "age"}, 65]}, "red", "green"]}`, `{"age": 65}`, "green", ReasonTargetingMatch},
		{"greater", `{"if": [{">": [{"var": "age"}, "18"]}, "red", "green"]}`, `{"age": 19}`, "red", ReasonTargetingMatch},
		{"greater equal", `{"if": [{">=": [{"var": "age"}, 18]}, "red", "green"]}`, `{"age": 18}`, "red", ReasonTargetingMatch},
		{"in array", `{"if": [{"in": [{"var": "c"}, ["US", "CA"]]}, "red", "green"]}`, `{"c": "CA"}`, "red", ReasonTargetingMatch},
		{"in large set", `{"if": [{"in": [{"var": "c"}, ["a","b","c","d","e","f","g","h","i","CA"]]}, "red", "green"]}`, `{"c": "CA"}`, "red", ReasonTargetingMatch},
		{"in large set miss", `{"if": [{"in": [{"var": "c"}, ["a","b","c","d","e","f","g","h","i","CA"]]}, "red", "green"]}`, `{"c": "ZZ"}`, "green", ReasonTargetingMatch},
		{"in string", `{"if": [{"in": ["@example", {"var": "email"}]}, "red", "green"]}`, `{"email": "a@example.com"}`, "red", ReasonTargetingMatch},
		{"cat", `{"cat": ["re", "d"]}`, `{}`, "red", ReasonTargetingMatch},
		{"substr", `{"substr": ["xxred", 2]}`, `{}`, "red", ReasonTargetingMatch},
		{"substr negative", `{"substr": ["greenish", 0, -3]}`, `{}`, "green", ReasonTargetingMatch},
		{"plus", `{"if": [{"==": [{"+": [1, 2]}, 3]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"minus", `{"if": [{"==": [{"-": [5, 2]}, 3]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"times", `{"if": [{"==": [{"*": [2, 3]}, 6]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"divide", `{"if": [{"==": [{"/": [6, 3]}, 2]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"modulo", `{"if": [{"==": [{"%": [7, 3]}, 1]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"min max", `{"if": [{"==": [{"max": [1, 9, 3]}, {"+": [{"min": [4, 8]}, 5]}]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"merge", `{"if": [{"in": ["b", {"merge": [["a"], ["b"]]}]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"missing", `{"if": [{"missing": ["a", "b"]}, "red", "green"]}`, `{"a": 1, "b": 2}`, "green", ReasonTargetingMatch},
		{"missing some", `{"if": [{"missing_some": [1, ["a", "b"]]}, "red", "green"]}`, `{"b": 2}`, "green", ReasonTargetingMatch},
		{"map", `{"if": [{"in": [4, {"map": [{"var": "xs"}, {"*": [{"var": ""}, 2]}]}]}, "red", "green"]}`, `{"xs": [1, 2]}`, "red", ReasonTargetingMatch},
		{"filter", `{"if": [{"==": [{"var": [{"cat": ["0"]}]}, null]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"reduce", `{"if": [{"==": [{"reduce": [{"var": "xs"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}, 6]}, "red", "green"]}`, `{"xs": [1, 2, 3]}`, "red", ReasonTargetingMatch},
		{"all", `{"if": [{"all": [{"var": "xs"}, {">": [{"var": ""}, 0]}]}, "red", "green"]}`, `{"xs": [1, 2]}`, "red", ReasonTargetingMatch},
		{"all empty", `{"if": [{"all": [[], true]}, "red", "green"]}`, `{}`, "green", ReasonTargetingMatch},
		{"some", `{"if": [{"some": [{"var": "xs"}, {">": [{"var": ""}, 1]}]}, "red", "green"]}`, `{"xs": [1, 2]}`, "red", ReasonTargetingMatch},
		{"none", `{"if": [{"none": [{"var": "xs"}, {">": [{"var": ""}, 5]}]}, "red", "green"]}`, `{"xs": [1, 2]}`, "red", ReasonTargetingMatch},
		{"starts_with", `{"if": [{"starts_with": [{"var": "email"}, "admin@"]}, "red", "green"]}`, `{"email": "admin@x.io"}`, "red", ReasonTargetingMatch},
		{"ends_with", `{"if": [{"ends_with": [{"var": "email"}, "@x.io"]}, "red", "green"]}`, `{"email": "admin@x.io"}`, "red", ReasonTargetingMatch},
		{"ends_with non-string is null", `{"ends_with": [{"var": "email"}, "@x.io"]}`, `{"email": 3}`, "blue", ReasonDefault},
		{"sem_ver >=", `{"if": [{"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, "red", "green"]}`, `{"v": "1.10.0"}`, "red", ReasonTargetingMatch},
		{"sem_ver prerelease", `{"if": [{"sem_ver": [{"var": "v"}, "<", "2.0.0"]}, "red", "green"]}`, `{"v": "2.0.0-alpha"}`, "red", ReasonTargetingMatch},
		{"sem_ver caret", `{"if": [{"sem_ver": [{"var": "v"}, "^", "3.0.0"]}, "red", "green"]}`, `{"v": "3.9.1"}`, "red", ReasonTargetingMatch},
		{"sem_ver tilde", `{"if": [{"sem_ver": [{"var": "v"}, "~", "3.1.0"]}, "red", "green"]}`, `{"v": "3.2.0"}`, "green", ReasonTargetingMatch},
		{"sem_ver invalid is null", `{"sem_ver": [{"var": "v"}, "=", "1.0.0"]}`, `{"v": "1.0.0.0"}`, "blue", ReasonDefault},
		{"sem_ver v prefix and partial", `{"if": [{"sem_ver": [{"var": "v"}, "=", "1.0.0"]}, "red", "green"]}`, `{"v": "V1"}`, "red", ReasonTargetingMatch},
		{"sem_ver numeric context", `{"if": [{"sem_ver": [{"var": "v"}, "=", "1.2.0"]}, "red", "green"]}`, `{"v": 1.2}`, "red", ReasonTargetingMatch},
		{"flagKey", `{"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"timestamp", `{"if": [{">": [{"var": "$flagd.timestamp"}, 1600000000]}, "red", "green"]}`, `{}`, "red", ReasonTargetingMatch},
		{"boolean result picks variant named true", `{"==": [1, 1]}`, `{}`, "true", ReasonTargetingMatch},
		{"number result picks variant by name", `{"+": [0, 1]}`, `{}`, "1", ReasonTargetingMatch},
		{"unknown variant is an error", `"purple"`, `{}`, "", ReasonError},
		{"null gives default", `null`, `{}`, "blue", ReasonStatic},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snap(t, map[string]string{"f": rule(tc.rule)})
			r := s.Evaluate("f", ctxOf(t, tc.ctx))
			if r.Variant != tc.variant || r.Reason != tc.reason {
				t.Fatalf("got variant=%q reason=%s (%s %s), want %q %s", r.Variant, r.Reason, r.ErrorCode, r.ErrorDetails, tc.variant, tc.reason)
			}
		})
	}
}

func TestFractional(t *testing.T) {
	// Expected values from flagd's test bed (v2 bucketing).
	s := snap(t, map[string]string{
		"fractional-flag": `{"state":"ENABLED","variants":{"clubs":"clubs","diamonds":"diamonds","hearts":"hearts","spades":"spades","wild":"wild"},"defaultVariant":"wild",
			"targeting":{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}, ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}}`,
		"fractional-flag-shorthand": `{"state":"ENABLED","variants":{"heads":"heads","tails":"tails"},"defaultVariant":"heads","targeting":{"fractional": [["heads"], ["tails", 1]]}}`,
		"zero":                      `{"state":"ENABLED","variants":{"one":"1","two":"2"},"defaultVariant":"one","targeting":{"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 0]]}}`,
		"negative":                  `{"state":"ENABLED","variants":{"one":"1","two":"2"},"defaultVariant":"one","targeting":{"fractional": [{"var": "targetingKey"}, ["one", -50], ["two", 100]]}}`,
	})
	for name, want := range map[string]string{"jack": "hearts", "queen": "spades", "ten": "clubs", "nine": "diamonds", "3": "clubs"} {
		r := s.Evaluate("fractional-flag", ctxOf(t, `{"user":{"name":"`+name+`"}}`))
		if r.Variant != want {
			t.Errorf("%s: got %s want %s", name, r.Variant, want)
		}
	}
	for tk, want := range map[string]string{"jon@company.com": "heads", "jane@company.com": "tails"} {
		if r := s.Evaluate("fractional-flag-shorthand", ctxOf(t, `{"targetingKey":"`+tk+`"}`)); r.Variant != want {
			t.Errorf("%s: got %s want %s", tk, r.Variant, want)
		}
	}
	if r := s.Evaluate("zero", ctxOf(t, `{"targetingKey":"u"}`)); r.Reason != ReasonDefault {
		t.Errorf("zero weights: %+v", r)
	}
	if r := s.Evaluate("negative", ctxOf(t, `{"targetingKey":"u"}`)); r.Variant != "two" {
		t.Errorf("negative weight: %+v", r)
	}
}

func TestMurmur3(t *testing.T) {
	// Reference vectors for MurmurHash3 x86_32, seed 0.
	for in, want := range map[string]uint32{"": 0, "a": 0x3c2569b2, "abc": 0xb3dd93fa, "Hello, world!": 0xc0363e43} {
		for split := 0; split <= len(in); split++ {
			if got := murmur3(in[:split], in[split:]); got != want {
				t.Errorf("murmur3(%q split %d) = %#x, want %#x", in, split, got, want)
			}
		}
	}
}

func TestFlagBasics(t *testing.T) {
	s := snap(t, map[string]string{
		"static":   `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"team":"web"}}`,
		"disabled": `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`,
		"nodef":    `{"state":"ENABLED","variants":{"on":true,"off":false}}`,
		"num":      `{"state":"ENABLED","variants":{"a":1,"b":2.5},"defaultVariant":"a"}`,
		"child":    `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","prerequisites":{"disabled":"on"}}`,
	})
	cases := []struct {
		key, variant, value string
		reason              Reason
		code                ErrorCode
	}{
		{"static", "on", "true", ReasonStatic, ""},
		{"disabled", "", "", ReasonDisabled, ""},
		{"nodef", "", "", ReasonDefault, ""},
		{"num", "a", "1", ReasonStatic, ""},
		{"child", "on", "true", ReasonDefault, ""},
		{"nope", "", "", ReasonError, CodeFlagNotFound},
	}
	for _, c := range cases {
		r := s.Evaluate(c.key, nil)
		if r.Variant != c.variant || string(r.ValueJSON) != c.value || r.Reason != c.reason || r.ErrorCode != c.code {
			t.Errorf("%s: got %+v", c.key, r)
		}
	}
	if r := s.Evaluate("static", nil); string(r.MetadataJSON) != `{"team":"web"}` {
		t.Errorf("metadata %s", r.MetadataJSON)
	}
	if r := s.Evaluate("child", nil); r.Metadata["prerequisiteFailed"] != "disabled" {
		t.Errorf("prerequisite metadata %v", r.Metadata)
	}
}

func TestProblems(t *testing.T) {
	specs := []FlagSpec{
		spec(t, "a", `{"variants":{"on":true,"off":"no"},"defaultVariant":"blue","targeting":{"if":[{"iff":[1]},"on","off"]},"prerequisites":{"b":"on"}}`),
		spec(t, "b", `{"variants":{"on":true,"off":false},"defaultVariant":"on","prerequisites":{"a":"on"}}`),
	}
	_, problems := NewSnapshot(1, specs, SnapshotOptions{})
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{
		`flags.a.variants: variants must share one type (off: string, on: boolean)`,
		`flags.a.defaultVariant: "blue" is not a variant (have: off, on)`,
		`flags.a.targeting.if[0]: unknown operator "iff"`,
		`flags.a.prerequisites: cycle a → b → a`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing problem %q in:\n%s", want, joined)
		}
	}
}

func TestCacheKey(t *testing.T) {
	s := snap(t, map[string]string{
		"f":    rule(`{"if": [{"==": [{"var": "user.tier"}, "gold"]}, "red", "green"]}`),
		"time": rule(`{"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "red", "green"]}`),
		"dyn":  rule(`{"var": {"cat": ["co", "lor"]}}`),
	})
	f := s.Flag("f")
	k1, ok := f.AppendCacheKey(nil, ctxOf(t, `{"user":{"tier":"gold"},"other":1}`))
	k2, _ := f.AppendCacheKey(nil, ctxOf(t, `{"user":{"tier":"gold"},"other":2}`))
	k3, _ := f.AppendCacheKey(nil, ctxOf(t, `{"user":{"tier":"silver"}}`))
	if !ok || string(k1) != string(k2) || string(k1) == string(k3) {
		t.Fatalf("keys %q %q %q", k1, k2, k3)
	}
	if _, ok := s.Flag("time").AppendCacheKey(nil, NewContext()); ok {
		t.Fatal("time-dependent flag must not be cacheable")
	}
	if _, ok := s.Flag("dyn").AppendCacheKey(nil, NewContext()); ok {
		t.Fatal("computed var path must not be cacheable")
	}
}

func TestDecodeContext(t *testing.T) {
	tests := []struct {
		name string
		in   string
		code ErrorCode
	}{
		{"ok", `{"targetingKey":"u1","n":1.5,"b":true,"x":null,"a":[1,"s"],"o":{"k":"\u00e9\n"}}`, ""},
		{"malformed", `{"a":}`, CodeParseError},
		{"trailing", `{} x`, CodeParseError},
		{"not object", `[1]`, CodeInvalidContext},
		{"too deep", strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40), CodeInvalidContext},
		{"bad escape", `{"a":"\x"}`, CodeParseError},
		{"unterminated", `{"a":"`, CodeParseError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewContext()
			err := c.Decode([]byte(tc.in), Limits{})
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tk, _ := c.TargetingKey(); tk != "u1" {
					t.Fatalf("targetingKey %q", tk)
				}
				return
			}
			ce, ok := err.(*ContextError)
			if !ok || ce.Code != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
		})
	}
	c := NewContext()
	if err := c.DecodeField([]byte(`{"other":[1,{"x":2}],"context":{"targetingKey":"u1"}}`), "context", Limits{}); err != nil {
		t.Fatal(err)
	}
	if tk, _ := c.TargetingKey(); tk != "u1" {
		t.Fatal("DecodeField lost the context")
	}
	// Read as flagd's OFREP handler reads a body (Go's json.Decoder into an
	// `any` context): these are empty contexts or the last context, not errors.
	for _, tc := range []struct{ body, wantTK string }{
		{`{"context":"x"}`, ""},                     // not an object: ignored
		{`{"context":[1,2]}`, ""},                   // not an object: ignored
		{`null`, ""},                                // null body
		{`{"CONTEXT":{"targetingKey":"u2"}}`, "u2"}, // names match case-insensitively
		{`{"context":{"targetingKey":"a"},"context":{"targetingKey":"b"}}`, "b"}, // the last one wins
		{`{"context":{"targetingKey":"a"},"context":null}`, ""},                  // ... even when it is null
		{`{"context":{"targetingKey":"u3"}} trailing`, "u3"},                     // only the first value is read
	} {
		if err := c.DecodeField([]byte(tc.body), "context", Limits{}); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if tk, _ := c.TargetingKey(); tk != tc.wantTK {
			t.Fatalf("%s: targetingKey %q, want %q", tc.body, tk, tc.wantTK)
		}
		if err := c.ValidateField([]byte(tc.body), "context", Limits{}); err != nil {
			t.Fatalf("ValidateField %s: %v", tc.body, err)
		}
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"context":`, `{"context":{"a":}}`} {
		if err := c.DecodeField([]byte(bad), "context", Limits{}); err == nil {
			t.Fatalf("%s: want an error", bad)
		}
	}
	if err := c.Decode([]byte(`{"a":1,"b":2,"c":3}`), Limits{MaxKeys: 2}); err == nil || err.(*ContextError).Code != CodeInvalidContext {
		t.Fatalf("key limit: %v", err)
	}
}

// TestEvaluateFallback: the fallback rule answers with metadata saying so
// and why, prerequisites still apply, the flag's reads cover both rules,
// flags without a fallback are unchanged, and nothing is allocated.
func TestEvaluateFallback(t *testing.T) {
	withFB := spec(t, "f", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","metadata":{"team":"web"},
		"targeting":{"if":[{"==":[{"var":"email"},"a@x"]},"on","off"]}}`)
	withFB.FallbackTargeting = map[string]any{"if": []any{map[string]any{"==": []any{map[string]any{"var": "plan"}, "premium"}}, "on", "off"}}
	withFB.HasFallback, withFB.TargetingBudget = true, 20*time.Microsecond
	emptyFB := spec(t, "e", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
		"targeting":{"if":[{"==":[{"var":"email"},"a@x"]},"on","off"]}}`)
	emptyFB.HasFallback = true
	gated := spec(t, "g", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"gate":"on"},
		"targeting":{"if":[{"==":[{"var":"email"},"a@x"]},"on","off"]}}`)
	gated.FallbackTargeting, gated.HasFallback = map[string]any{"if": []any{true, "on", "off"}}, true
	specs := []FlagSpec{withFB, emptyFB, gated,
		spec(t, "gate", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`),
		spec(t, "plain", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"email"},"a@x"]},"on","off"]}}`)}
	s, ps := NewSnapshot(1, specs, SnapshotOptions{})
	if ps != nil {
		t.Fatal(ps)
	}
	ctx := ctxOf(t, `{"email":"b@x","plan":"premium"}`)
	tests := []struct {
		name, flag string
		why        FallbackReason
		variant    string
		reason     Reason
		meta       string
	}{
		{"cost", "f", FallbackCost, "on", ReasonTargetingMatch, `{"pennonFallbackReason":"cost","pennonTargeting":"fallback","team":"web"}`},
		{"overload", "f", FallbackOverload, "on", ReasonTargetingMatch, `{"pennonFallbackReason":"overload","pennonTargeting":"fallback","team":"web"}`},
		{"empty fallback serves the default", "e", FallbackCost, "off", ReasonStatic, `{"pennonFallbackReason":"cost","pennonTargeting":"fallback"}`},
		{"prerequisite still gates", "g", FallbackCost, "off", ReasonDefault, `{"prerequisiteFailed":"gate","prerequisiteRequired":"on"}`},
		{"no fallback: full rule, own metadata", "plain", FallbackOverload, "off", ReasonTargetingMatch, `{}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.EvaluateFallback(s.Flag(tc.flag), ctx, tc.why)
			if r.Variant != tc.variant || r.Reason != tc.reason || string(r.MetadataJSON) != tc.meta {
				t.Fatalf("got %s %s %s, want %s %s %s", r.Variant, r.Reason, r.MetadataJSON, tc.variant, tc.reason, tc.meta)
			}
		})
	}
	if full := s.EvaluateFlag(s.Flag("f"), ctx); full.Variant != "off" || string(full.MetadataJSON) != `{"team":"web"}` {
		t.Fatalf("full rule: %+v", full)
	}
	if got := strings.Join(s.Flag("f").Reads(), ","); got != "email,plan" {
		t.Fatalf("reads %q, want both rules' (email,plan)", got)
	}
	if !s.Flag("f").HasFallback() || s.Flag("plain").HasFallback() || s.Flag("f").TargetingBudget() != 20*time.Microsecond {
		t.Fatal("HasFallback/TargetingBudget")
	}
	f := s.Flag("f")
	if n := testing.AllocsPerRun(100, func() { _ = s.EvaluateFallback(f, ctx, FallbackCost) }); n != 0 {
		t.Fatalf("EvaluateFallback allocates %v times", n)
	}
	bad := spec(t, "b", `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`)
	bad.FallbackTargeting, bad.HasFallback = map[string]any{"if": []any{map[string]any{"nope": []any{1}}, "on", nil}}, true
	if _, ps := NewSnapshot(1, []FlagSpec{bad}, SnapshotOptions{}); len(ps) != 1 || ps[0].Path != "flags.b.fallbackTargeting.if[0]" {
		t.Fatalf("problems %v, want one at flags.b.fallbackTargeting.if[0]", ps)
	}
}

// TestDuplicateKeys: a key given twice is a problem (the second is
// dropped), whether the specs come sorted (the equal keys are
// neighbours), unsorted, or sorted and unique (no problem at all).
func TestDuplicateKeys(t *testing.T) {
	def := `{"variants":{"on":true},"defaultVariant":"on"}`
	tests := []struct {
		keys []string
		want []string
	}{
		{[]string{"a", "b", "c"}, nil},
		{[]string{"a", "b", "b", "c"}, []string{"flags.b: duplicate flag key"}},
		{[]string{"b", "a", "b"}, []string{"flags.b: duplicate flag key"}},
		{[]string{"c", "a", "b"}, nil},
		{[]string{"a", "", "b"}, []string{"flags: flag key must not be empty"}},
	}
	for _, tc := range tests {
		specs := make([]FlagSpec, len(tc.keys))
		for i, k := range tc.keys {
			specs[i] = spec(t, k, def)
		}
		s, problems := NewSnapshot(1, specs, SnapshotOptions{})
		var got []string
		for _, p := range problems {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: problems %q, want %q", tc.keys, got, tc.want)
		}
		if s != nil && len(tc.want) == 0 && s.Len() != len(tc.keys) {
			t.Errorf("%q: %d flags", tc.keys, s.Len())
		}
	}
}
