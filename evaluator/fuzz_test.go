package evaluator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func FuzzDecodeContext(f *testing.F) {
	for _, s := range []string{`{"context":{"a":[1,{"b":"\u00e9"}]},"x":1e5}`, `{"context":5}`, `{"context":{"n":1e999}}`, `{}`, `{"a":1}`, string(context200), `{"a":"\ud83d\ude00"}`, `{"a":[[[]]]}`, `[`, `{"a":-0.5e+3}`, `{"a":"\u12"}`, "{\"\":\"\xa4\\b0000\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewContext()
		// Decode into a Context that already holds a context, as a pooled
		// one does, so reuse of its storage is exercised on every input.
		if err := c.Decode(context200, Limits{}); err != nil {
			t.Fatal(err)
		}
		err := c.Decode(data, Limits{MaxBytes: 4096, MaxDepth: 8, MaxKeys: 64})
		if err == nil {
			// A decoded context must agree with encoding/json about validity
			// and about every value.
			var m map[string]any
			if json.Unmarshal(data, &m) != nil {
				t.Fatalf("accepted invalid JSON %q", data)
			}
			if !reflect.DeepEqual(c.Map(), m) {
				t.Fatalf("decoded %q as %#v, encoding/json as %#v", data, c.Map(), m)
			}
			// and a second decode into the same storage gives the same values
			if err := c.Decode(data, Limits{MaxBytes: 4096, MaxDepth: 8, MaxKeys: 64}); err != nil || !reflect.DeepEqual(c.Map(), m) {
				t.Fatalf("second decode of %q: %v, %#v", data, err, c.Map())
			}
		} else if len(c.Map()) != 0 {
			t.Fatalf("failed decode of %q left %d keys", data, len(c.Map()))
		}
		errFull := c.DecodeField(data, "context", Limits{MaxBytes: 4096, MaxDepth: 8, MaxKeys: 64})
		errCheck := c.ValidateField(data, "context", Limits{MaxBytes: 4096, MaxDepth: 8, MaxKeys: 64})
		if (errFull == nil) != (errCheck == nil) {
			t.Fatalf("DecodeField (%v) and ValidateField (%v) disagree on %q", errFull, errCheck, data)
		}
	})
}

func FuzzCompileTargeting(f *testing.F) {
	for _, s := range []string{
		`{"if":[{"==":[{"var":"a"},1]},"on","off"]}`,
		`{"fractional":[["a",50],["b",50]]}`,
		`{"sem_ver":[{"var":"v"},"^","1.0.0"]}`,
		`{"reduce":[{"var":"xs"},{"+":[{"var":"current"},{"var":"accumulator"}]},0]}`,
		`{"substr":["abc",-5,-9]}`, `{"missing_some":[1,["a"]]}`, `{"map":[[1,2],{"var":""}]}`,
	} {
		f.Add(s, `{"a":1,"v":"1.2.3","xs":[1,2],"targetingKey":"u"}`)
	}
	f.Fuzz(func(t *testing.T, rule, ctx string) {
		d := json.NewDecoder(strings.NewReader(rule))
		d.UseNumber()
		var r any
		if d.Decode(&r) != nil {
			return
		}
		if len(CompileTargeting(r)) > 0 {
			return
		}
		s, problems := NewSnapshot(1, []FlagSpec{{Key: "f", Variants: []VariantSpec{{Name: "on", Value: true}}, Targeting: r}}, SnapshotOptions{})
		if problems != nil {
			return
		}
		c := NewContext()
		if c.Decode([]byte(ctx), Limits{}) != nil {
			return
		}
		_ = s.Evaluate("f", c)
	})
}
