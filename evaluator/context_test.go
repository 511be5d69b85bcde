package evaluator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestDecodeContextReuse decodes a sequence of contexts into one Context, as
// the proxy's pool does, and checks every decode against encoding/json: the
// reused maps, array chunks and value boxes must never show a previous
// request's data.
func TestDecodeContextReuse(t *testing.T) {
	c := NewContext()
	for _, tc := range []struct{ name, js string }{
		{"typical", string(context200)},
		{"nested arrays", `{"a":[1,[2,[3,"x"],4],"y",[]],"b":[[["deep"]]],"c":[]}`},
		{"objects in arrays", `{"xs":[{"k":"v1","n":1.5},{"k":"v2","n":-300},{}],"o":{"p":{"q":[true,false,null]}}}`},
		{"fewer keys than before", `{"targetingKey":"other"}`},
		{"escapes and big numbers", `{"s":"a\"b\\c\u00e9\ud83d\ude00","n":123456789.25,"e":-1.5e300,"z":0,"neg":-0,"i":255,"j":256}`},
		{"duplicate keys: last wins", `{"a":"first","a":["second"],"d":{"x":1},"d":{"y":2}}`},
		{"empty", `{}`},
		{"many values (chunks grow mid-decode)", manyValues(200)},
		{"typical again", string(context200)},
		// The top level is a flat list up to flatMax members and a map past
		// it; both must read exactly like encoding/json's map.
		{"exactly flatMax members", padded(`{"targetingKey":"tk"}`, flatMax-1)},
		{"one past flatMax", padded(`{"targetingKey":"tk","x":{"y":[1,"z"]}}`, flatMax-1)},
		{"many members", padded(`{"targetingKey":"tk"}`, 200)},
		{"flat again after the map form", `{"targetingKey":"again","a":1}`},
		{"duplicate in the flat list: last wins", `{"a":"first","b":1,"a":"second","targetingKey":5}`},
		{"duplicate straddling flatMax: last wins", padded(`{"a":"first","targetingKey":"tk","a":{"k":"last"}}`, flatMax-1)},
		{"duplicates only", `{"a":1,"a":2,"a":3,"a":4,"a":5,"a":6,"a":7,"a":8,"a":9,"a":10,"a":11,"a":12,"a":13,"a":14,"a":15,"a":16,"a":17,"a":18}`},
		{"dotted and empty keys", `{"a.b":"literal","a":{"b":"nested"},"":"empty key"}`},
		// str scans shortStr (16) bytes one at a time, then by words.
		{"stops around the word scan's start", `{"s15":"abcdefghijklmno","s16":"abcdefghijklmnop","s17":"abcdefghijklmnopq",` +
			`"e16":"abcdefghijklmnop\n","e17":"abcdefghijklmnopq\"","u16":"abcdefghijklmno\u00e9xyz","n16":"abcdefghijklmnoéxyz0123456789",` +
			`"n24":"0123456789abcdefghijklmé","long":"` + strings.Repeat("0123456789", 20) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Decode([]byte(tc.js), Limits{}); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(tc.js), &want); err != nil {
				t.Fatal(err)
			}
			checkTopLevel(t, c, want)
		})
	}
}

func manyValues(n int) string {
	b := []byte(`{"arr":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `["s`...)
		b = append(b, byte('a'+i%26))
		b = append(b, `",1000.5,{"k":"v"}]`...)
	}
	return string(append(b, "]}"...))
}

// TestDecodeContextStringsOutliveReuse: strings and numbers taken out of a
// context stay valid after the Context decodes the next request (only the
// containers and boxes are reused), and a failed decode leaves it empty.
func TestDecodeContextStringsOutliveReuse(t *testing.T) {
	c := NewContext()
	if err := c.Decode([]byte(`{"plan":"premium","n":1234.5,"tags":["beta"]}`), Limits{}); err != nil {
		t.Fatal(err)
	}
	plan, n, tag := c.Map()["plan"].(string), c.Map()["n"].(float64), c.Map()["tags"].([]any)[0].(string)
	if err := c.Decode([]byte(`{"plan":"basic!!","n":99999.5,"tags":["gamma"]}`), Limits{}); err != nil {
		t.Fatal(err)
	}
	if plan != "premium" || n != 1234.5 || tag != "beta" {
		t.Fatalf("values from the first decode changed: %q %v %q", plan, n, tag)
	}
	if got := c.Map()["plan"]; got != "basic!!" {
		t.Fatalf("plan = %#v, want basic!!", got)
	}
	err := c.Decode([]byte(`{"plan":"x","bad":[1,2,}`), Limits{})
	if ce, ok := err.(*ContextError); !ok || ce.Code != CodeParseError || ce.Detail != "invalid JSON at offset 23: unexpected character '}'" {
		t.Fatalf("err = %#v", err)
	}
	if len(c.Map()) != 0 {
		t.Fatalf("failed decode left %v", c.Map())
	}
}

// TestDecodeContextArrayCapacity: a decoded array's capacity is its length,
// so a reader that appends to it gets a copy instead of overwriting the
// array decoded next to it in the shared chunk.
func TestDecodeContextArrayCapacity(t *testing.T) {
	c := ctxOf(t, `{"a":[1,2],"b":[3,4]}`)
	a := c.Map()["a"].([]any)
	if cap(a) != len(a) {
		t.Fatalf("cap %d, len %d", cap(a), len(a))
	}
	_ = append(a, "overwrite?")
	if got := c.Map()["b"].([]any); !reflect.DeepEqual(got, []any{3.0, 4.0}) {
		t.Fatalf("b = %#v", got)
	}
}

// TestDecodeContextAllocs pins the cost the proxy's pooled Contexts rely
// on: once warm, a typical context decodes with one allocation (the copy of
// the request the strings point into).
func TestDecodeContextAllocs(t *testing.T) {
	c := NewContext()
	allocs := testing.AllocsPerRun(100, func() {
		if err := c.Decode(context200, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Fatalf("Decode of a 200-byte context: %v allocations, want ≤ 2", allocs)
	}
	body := []byte(`{"context":` + string(context200) + `}`)
	allocs = testing.AllocsPerRun(100, func() {
		if err := c.DecodeField(body, "context", Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Fatalf("DecodeField of a 200-byte context: %v allocations, want ≤ 2", allocs)
	}
}

// TestValidateFieldInvalidUTF8BeforeEscape: a string with invalid UTF-8
// before its first escape is rejected by ValidateField exactly as by
// DecodeField (ValidateField used to skip the bytes before the escape).
func TestValidateFieldInvalidUTF8BeforeEscape(t *testing.T) {
	body := []byte("{\"x\":\"\xa4\\b\",\"context\":{}}")
	c := NewContext()
	for name, err := range map[string]error{
		"DecodeField":   c.DecodeField(body, "context", Limits{}),
		"ValidateField": c.ValidateField(body, "context", Limits{}),
	} {
		ce, ok := err.(*ContextError)
		if !ok || ce.Code != CodeParseError || ce.Detail != "invalid JSON at offset 10: string is not valid UTF-8" {
			t.Errorf("%s: err = %#v", name, err)
		}
	}
}
