package config

import (
	"strings"
	"testing"
)

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"none", `{"flags":{"a":{"x":1},"b":{"x":1}},"metadata":{"x":[{"x":1},{"x":2}]}}`, nil},
		{"top level", `{"flags":{},"flags":{}}`, []string{`flags: duplicate key "flags"`}},
		{"flag defined twice", `{"flags":{"a":{"state":"ENABLED"},"b":{},"a":{"state":"DISABLED"}}}`, []string{`flags.a: duplicate key "a"`}},
		{"inside targeting", `{"flags":{"a":{"targeting":{"if":[{"==":[1,1],"==":[2,2]},"on",null]}}}}`, []string{`flags.a.targeting.if[0].==: duplicate key "=="`}},
		{"escaped key", `{"flags":{"a":1,"\u0061":2}}`, []string{`flags.a: duplicate key "a"`}},
		{"whitespace", "{ \"flags\" : { \"a\" : 1 ,\n \"a\" : [ 1 , { } ] } }", []string{`flags.a: duplicate key "a"`}},
		{"string with braces and quotes", `{"flags":{"a":"}{\"a\":","a":2}}`, []string{`flags.a: duplicate key "a"`}},
		{"truncated", `{"flags":{"a":1,"a"`, nil},
		{"garbage", `}}]]"\`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := duplicateKeys([]byte(tc.doc), "")
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i].String(), w) {
					t.Errorf("got %q, want prefix %q", got[i].String(), w)
				}
			}
		})
	}
}

func TestParseRejectsDuplicateFlag(t *testing.T) {
	_, err := Parse([]byte(`{"flags":{"a":{"state":"ENABLED","variants":{"on":true}},"a":{"state":"DISABLED","variants":{"on":true}}}}`))
	if err == nil || !strings.Contains(err.Error(), `flags.a: duplicate key "a"`) {
		t.Fatalf("err = %v", err)
	}
	_, err = Empty().Apply(&Changeset{Changes: []Change{{Flag: "x", Op: OpPut, Definition: []byte(`{"state":"ENABLED","state":"DISABLED","variants":{"on":true}}`)}}})
	if err == nil || !strings.Contains(err.Error(), `flags.x.state: duplicate key "state"`) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `[{"a":[1,{"b":1,"b":2}]}]`, `{"\u0061":1,"a":1}`, `{"a":"\"`, `}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = duplicateKeys(data, "x") // must terminate without panicking
	})
}
