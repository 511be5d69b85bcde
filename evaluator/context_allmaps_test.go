package evaluator

import (
	"bytes"
	"reflect"
	"testing"
)

// decodeEager decodes data as Decode did before the top level became a
// flat list: every object a map.
func decodeEager(data []byte, lim Limits) (any, error) {
	var mem arena
	d := decoder{data: data, src: string(data), lim: lim.withDefaults(), mem: &mem}
	d.skipSpace()
	v, err := d.value(0)
	if err == nil {
		err = d.end()
	}
	return v, err
}

// FuzzDecodeContextAllMaps: Decode gives the same error (code and message)
// as the all-maps decoder, and the same values whether read one member at
// a time or through Map().
func FuzzDecodeContextAllMaps(f *testing.F) {
	for _, s := range []string{string(context200), `{"a":1e999}`, `{"a":{"b":"\ud800"}}`, "{\"a\":{\"b\":\"\xff\"}}", `{"a":[1,2,{"b":[[]]}],"a":{"c":-0}}`,
		`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}`, padded(`{"x":{"y":[1,"y"]}}`, 20), `{"o":{"k":1,"k":2},"p":{}}`, `{"a":{"b":tru}}`, `{"a":{"b" "c"}}`, `{"\u0061":{"x":1},"a":2}`} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxBytes: 4096, MaxDepth: 8, MaxKeys: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' || len(data) > lim.MaxBytes {
			return // Decode answers these before reading an object, as it always did
		}
		want, wantErr := decodeEager(data, lim)
		c := NewContext()
		if err := c.Decode(context200, Limits{}); err != nil {
			t.Fatal(err)
		}
		c.Map() // a built map being reused
		err := c.Decode(data, lim)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("Decode(%q) = %v, all-maps decoder %v", data, err, wantErr)
		}
		if err != nil {
			return
		}
		wm := want.(map[string]any)
		for k, w := range wm {
			if v, ok := c.get(k); !ok || !reflect.DeepEqual(v, w) {
				t.Fatalf("Decode(%q): get(%q) = %#v, %v; all-maps %#v", data, k, v, ok, w)
			}
		}
		if !reflect.DeepEqual(c.Map(), wm) {
			t.Fatalf("Decode(%q): Map() = %#v, all-maps %#v", data, c.Map(), wm)
		}
	})
}
