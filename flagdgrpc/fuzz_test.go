package flagdgrpc

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pennon-dev/pennon/evaluator"
)

// FuzzDecodeContext checks the context converter against the way flagd
// reads a context (Struct.AsMap, then JSON): for any Struct a client can
// send, decoding our JSON gives the context that decoding AsMap's JSON
// gives (a Value with no kind set is null, NaN and ±Inf are the strings
// "NaN", "Infinity", "-Infinity"). Never panics.
func FuzzDecodeContext(f *testing.F) {
	seeds := []map[string]any{
		{},
		{"targetingKey": "user-1", "age": 33, "ratio": 0.25, "big": 1e300, "neg": math.Copysign(0, -1), "ok": true, "none": nil},
		{"nested": map[string]any{"list": []any{1, "two", map[string]any{"three": []any{}}}}, "esc": "\"\\\n\t\u2028\u0001é"},
		{"k\u0000ey": "v", "": ""},
	}
	for _, m := range seeds {
		st, err := structpb.NewStruct(m)
		if err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	nan, _ := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(math.NaN())}})
	f.Add(nan)
	f.Fuzz(func(t *testing.T, data []byte) {
		var st structpb.Struct
		if proto.Unmarshal(data, &st) != nil {
			return
		}
		got := evaluator.NewContext()
		_, err := decodeContext(got, &st, evaluator.Limits{}, nil)
		ref, jerr := json.Marshal(st.AsMap())
		if jerr != nil {
			if err == nil {
				t.Fatalf("%v has no JSON form (%v) but the context was accepted", &st, jerr)
			}
			return
		}
		want := evaluator.NewContext()
		werr := want.Decode(ref, evaluator.Limits{})
		if (err == nil) != (werr == nil) {
			t.Fatalf("ours: %v; via AsMap: %v\n%s", err, werr, ref)
		}
		if err == nil && !reflect.DeepEqual(got.Map(), want.Map()) {
			t.Fatalf("ours %v\nvia AsMap %v", got.Map(), want.Map())
		}
	})
}
