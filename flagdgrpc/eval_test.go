package flagdgrpc

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pennon-dev/pennon/evaluator"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

const testFlags = `{
  "metadata": {"team": "web"},
  "flags": {
    "static-on": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "owner": "web-team"},
    "static-off": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
    "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false}},
    "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "blue",
      "targeting": {"if": [{"==": [{"var": "plan"}, "premium"]}, "red", "blue"]}, "metadata": {"kind": "ui"}},
    "broken": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a", "targeting": {"var": "pick"}},
    "ratio": {"state": "ENABLED", "variants": {"low": 0.5, "high": 1.5}, "defaultVariant": "high"},
    "limit": {"state": "ENABLED", "variants": {"small": 10, "big": 1000}, "defaultVariant": "small",
      "targeting": {"if": [{">=": [{"var": "seats"}, 50]}, "big", null]}},
    "theme": {"state": "ENABLED", "variants": {"dark": {"bg": "black", "size": 2}, "light": {"bg": "white", "size": 1}}, "defaultVariant": "light"},
    "list": {"state": "ENABLED", "variants": {"a": [1, 2]}, "defaultVariant": "a"}
  }
}`

func ctxStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// answer is what a typed resolver returned, or the status it failed with;
// value is nil when the response has none (use the code default).
type answer struct {
	value   any
	reason  string
	variant string
	meta    map[string]any
	code    codes.Code
	msg     string
}

func resolve(t *testing.T, c *clients, kind, key string, ctx *structpb.Struct) answer {
	t.Helper()
	var (
		resp interface {
			proto.Message
			GetReason() string
			GetVariant() string
			GetMetadata() *structpb.Struct
		}
		value any
		err   error
	)
	cctx := callCtx(t)
	switch kind {
	case "bool":
		var r *evalv1.ResolveBooleanResponse
		r, err = c.eval.ResolveBoolean(cctx, &evalv1.ResolveBooleanRequest{FlagKey: key, Context: ctx})
		resp = r
		if r != nil && r.Value != nil {
			value = *r.Value
		}
	case "string":
		var r *evalv1.ResolveStringResponse
		r, err = c.eval.ResolveString(cctx, &evalv1.ResolveStringRequest{FlagKey: key, Context: ctx})
		resp = r
		if r != nil && r.Value != nil {
			value = *r.Value
		}
	case "int":
		var r *evalv1.ResolveIntResponse
		r, err = c.eval.ResolveInt(cctx, &evalv1.ResolveIntRequest{FlagKey: key, Context: ctx})
		resp = r
		if r != nil && r.Value != nil {
			value = *r.Value
		}
	case "float":
		var r *evalv1.ResolveFloatResponse
		r, err = c.eval.ResolveFloat(cctx, &evalv1.ResolveFloatRequest{FlagKey: key, Context: ctx})
		resp = r
		if r != nil && r.Value != nil {
			value = *r.Value
		}
	case "object":
		var r *evalv1.ResolveObjectResponse
		r, err = c.eval.ResolveObject(cctx, &evalv1.ResolveObjectRequest{FlagKey: key, Context: ctx})
		resp = r
		if r.GetValue() != nil {
			value = r.GetValue().AsMap()
		}
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	if err != nil {
		st, _ := status.FromError(err)
		return answer{code: st.Code(), msg: st.Message()}
	}
	return answer{value: value, reason: resp.GetReason(), variant: resp.GetVariant(), meta: resp.GetMetadata().AsMap(), code: codes.OK}
}

func TestResolvers(t *testing.T) {
	c := start(t, Options{Source: newDocHolder(t, testFlags)})
	premium := map[string]any{"plan": "premium", "seats": 80}
	web := map[string]any{"team": "web"}
	tests := []struct {
		name, kind, key string
		ctx             map[string]any
		want            answer
		msgHas          string
	}{
		{name: "boolean static", kind: "bool", key: "static-on",
			want: answer{value: true, reason: "STATIC", variant: "on", meta: web}},
		{name: "string targeting match", kind: "string", key: "color", ctx: premium,
			want: answer{value: "red", reason: "TARGETING_MATCH", variant: "red", meta: map[string]any{"team": "web", "kind": "ui"}}},
		{name: "string targeting other branch", kind: "string", key: "color", ctx: map[string]any{"plan": "free"},
			want: answer{value: "blue", reason: "TARGETING_MATCH", variant: "blue", meta: map[string]any{"team": "web", "kind": "ui"}}},
		{name: "int targeting", kind: "int", key: "limit", ctx: premium,
			want: answer{value: int64(1000), reason: "TARGETING_MATCH", variant: "big", meta: web}},
		{name: "int rule returns null: default", kind: "int", key: "limit", ctx: map[string]any{"seats": 3},
			want: answer{value: int64(10), reason: "DEFAULT", variant: "small", meta: web}},
		{name: "int read as float", kind: "float", key: "limit",
			want: answer{value: float64(10), reason: "DEFAULT", variant: "small", meta: web}},
		{name: "float", kind: "float", key: "ratio",
			want: answer{value: 1.5, reason: "STATIC", variant: "high", meta: web}},
		{name: "float read as int truncates, as flagd", kind: "int", key: "ratio",
			want: answer{value: int64(1), reason: "STATIC", variant: "high", meta: web}},
		{name: "object", kind: "object", key: "theme",
			want: answer{value: map[string]any{"bg": "white", "size": float64(1)}, reason: "STATIC", variant: "light", meta: web}},
		{name: "flag not found", kind: "bool", key: "nope",
			want: answer{code: codes.NotFound}, msgHas: "FLAG_NOT_FOUND"},
		{name: "type mismatch", kind: "bool", key: "color",
			want: answer{code: codes.InvalidArgument}, msgHas: "TYPE_MISMATCH"},
		{name: "array is not an object", kind: "object", key: "list",
			want: answer{code: codes.InvalidArgument}, msgHas: "TYPE_MISMATCH"},
		{name: "disabled flag: no value, reason DISABLED", kind: "bool", key: "disabled",
			want: answer{value: nil, reason: "DISABLED", meta: web}},
		{name: "disabled flag of another type: still no value", kind: "string", key: "disabled",
			want: answer{value: nil, reason: "DISABLED", meta: web}},
		{name: "no default variant: no value, reason DEFAULT", kind: "bool", key: "no-default",
			want: answer{value: nil, reason: "DEFAULT", meta: web}},
		{name: "false is a value", kind: "bool", key: "static-off",
			want: answer{value: false, reason: "STATIC", variant: "off", meta: web}},
		{name: "rule names a missing variant", kind: "string", key: "broken", ctx: map[string]any{"pick": "zzz"},
			want: answer{code: codes.Unknown}, msgHas: "GENERAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ctx *structpb.Struct
			if tc.ctx != nil {
				ctx = ctxStruct(t, tc.ctx)
			}
			got := resolve(t, c, tc.kind, tc.key, ctx)
			if tc.want.code != codes.OK {
				if got.code != tc.want.code || !strings.Contains(got.msg, tc.msgHas) {
					t.Fatalf("got %v %q, want %v containing %q", got.code, got.msg, tc.want.code, tc.msgHas)
				}
				return
			}
			if got.code != codes.OK {
				t.Fatalf("error %v: %s", got.code, got.msg)
			}
			if !equalJSON(got.value, tc.want.value) || got.reason != tc.want.reason || got.variant != tc.want.variant || !equalJSON(got.meta, tc.want.meta) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBadContext(t *testing.T) {
	c := start(t, Options{Source: newDocHolder(t, testFlags)})
	deep := map[string]any{}
	cur := deep
	for range 40 {
		next := map[string]any{}
		cur["a"] = next
		cur = next
	}
	many := map[string]any{}
	for i := range 1100 {
		many[fmt.Sprintf("k%d", i)] = i
	}
	tests := []struct {
		name   string
		ctx    *structpb.Struct
		msgHas string
	}{
		{"too deep", ctxStruct(t, deep), "context.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nested deeper than 16 levels"},
		{"too deep in a list", ctxStruct(t, map[string]any{"l": []any{deep}}), "context.l[0].a.a"},
		{"too many keys", ctxStruct(t, many), "INVALID_CONTEXT"},
		{"too large", ctxStruct(t, map[string]any{"blob": strings.Repeat("x", 70<<10)}), "the limit is 65536"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range []string{"color", "static-on"} {
				_, err := c.eval.ResolveString(callCtx(t), &evalv1.ResolveStringRequest{FlagKey: key, Context: tc.ctx})
				st, _ := status.FromError(err)
				if st.Code() != codes.Unknown || !strings.Contains(st.Message(), "INVALID_CONTEXT") || !strings.Contains(st.Message(), tc.msgHas) {
					t.Fatalf("%s: got %v %q, want Unknown with INVALID_CONTEXT and %q", key, st.Code(), st.Message(), tc.msgHas)
				}
			}
			_, err := c.eval.ResolveAll(callCtx(t), &evalv1.ResolveAllRequest{Context: tc.ctx})
			if st, _ := status.FromError(err); st.Code() != codes.Unknown {
				t.Fatalf("ResolveAll: got %v, want Unknown", st.Code())
			}
		})
	}
}

// TestNonFiniteNumbers: a Struct may carry NaN and ±Inf; like flagd (which
// reads contexts through Struct.AsMap) the sidecar sees the strings "NaN",
// "Infinity" and "-Infinity".
func TestNonFiniteNumbers(t *testing.T) {
	doc := `{"flags": {"kind": {"state": "ENABLED", "variants": {"nan": "nan", "inf": "inf", "ninf": "ninf", "other": "other"},
	  "defaultVariant": "other", "targeting": {"if": [{"==": [{"var": "x"}, "NaN"]}, "nan", {"==": [{"var": "x"}, "Infinity"]}, "inf",
	  {"==": [{"var": "x"}, "-Infinity"]}, "ninf", "other"]}}}}`
	c := start(t, Options{Source: newDocHolder(t, doc)})
	for _, tc := range []struct {
		x    float64
		want string
	}{{math.NaN(), "nan"}, {math.Inf(1), "inf"}, {math.Inf(-1), "ninf"}, {1.5, "other"}} {
		ctx := &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(tc.x)}}
		got := resolve(t, c, "string", "kind", ctx)
		if got.code != codes.OK || got.value != tc.want {
			t.Errorf("x=%v: %+v, want %s", tc.x, got, tc.want)
		}
	}
}

func TestResolveAll(t *testing.T) {
	c := start(t, Options{Source: newDocHolder(t, testFlags)})
	res, err := c.eval.ResolveAll(callCtx(t), &evalv1.ResolveAllRequest{Context: ctxStruct(t, map[string]any{"plan": "premium", "seats": 80, "pick": "zzz"})})
	if err != nil {
		t.Fatal(err)
	}
	type flag struct {
		value          any
		reason, varian string
	}
	want := map[string]flag{
		"static-on":  {true, "STATIC", "on"},
		"static-off": {false, "STATIC", "off"},
		"color":      {"red", "TARGETING_MATCH", "red"},
		"ratio":      {1.5, "STATIC", "high"},
		"limit":      {float64(1000), "TARGETING_MATCH", "big"},
		"theme":      {map[string]any{"bg": "white", "size": float64(1)}, "STATIC", "light"},
		// Left out: disabled, no-default (no value), broken (error), list (array).
	}
	if len(res.GetFlags()) != len(want) {
		t.Errorf("got %d flags %v, want %d", len(res.GetFlags()), keysOf(res.GetFlags()), len(want))
	}
	for key, w := range want {
		f := res.GetFlags()[key]
		if f == nil {
			t.Errorf("%s missing", key)
			continue
		}
		var v any
		switch x := f.GetValue().(type) {
		case *evalv1.AnyFlag_BoolValue:
			v = x.BoolValue
		case *evalv1.AnyFlag_StringValue:
			v = x.StringValue
		case *evalv1.AnyFlag_DoubleValue:
			v = x.DoubleValue
		case *evalv1.AnyFlag_ObjectValue:
			v = x.ObjectValue.AsMap()
		}
		if !equalJSON(v, w.value) || f.GetReason() != w.reason || f.GetVariant() != w.varian {
			t.Errorf("%s: got %v %s %s, want %+v", key, v, f.GetReason(), f.GetVariant(), w)
		}
		if f.GetMetadata().AsMap()["team"] != "web" {
			t.Errorf("%s: metadata %v lacks the flag set's", key, f.GetMetadata().AsMap())
		}
	}
	if got := res.GetMetadata().AsMap(); !equalJSON(got, map[string]any{"team": "web"}) {
		t.Errorf("flag-set metadata %v", got)
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLoopbackOnly(t *testing.T) {
	h := newDocHolder(t, testFlags)
	tests := []struct {
		name    string
		o       Options
		errHas  string
		allowed bool
	}{
		{name: "non-loopback eval", o: Options{EvalAddr: "0.0.0.0:8013"}, errHas: "grpc-addr \"0.0.0.0:8013\" is not a loopback address"},
		{name: "non-loopback sync", o: Options{SyncAddr: "10.1.2.3:8015"}, errHas: "sync-addr"},
		{name: "allow-remote", o: Options{EvalAddr: "0.0.0.0:8013", AllowRemote: true}, allowed: true},
		{name: "localhost", o: Options{EvalAddr: "localhost:8013"}, allowed: true},
		{name: "both disabled", o: Options{}, errHas: "set EvalAddr"},
		{name: "malformed", o: Options{EvalAddr: "8013"}, errHas: "want host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Source = h
			_, err := New(tc.o)
			if tc.allowed {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("got %v, want error containing %q", err, tc.errHas)
			}
		})
	}
	// A sync service without a document to serve is refused with the fix.
	var plain evaluator.Holder
	plain.Store(h.Current())
	if _, err := New(Options{Source: &plain, SyncAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "needs the flag document") {
		t.Fatalf("sync without documents: %v", err)
	}
}

// equalJSON compares decoded values by their JSON encoding (numbers of any
// Go type compare by value).
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// TestPortInUse: a taken port fails Listen with the flag to change and
// releases the other service's port.
func TestPortInUse(t *testing.T) {
	h := newDocHolder(t, testFlags)
	first, err := New(Options{Source: h, EvalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Listen(); err != nil {
		t.Fatal(err)
	}
	defer first.evalLn.Close()
	second, err := New(Options{Source: h, EvalAddr: "127.0.0.1:0", SyncAddr: first.EvalAddr()})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Listen()
	if err == nil || !strings.Contains(err.Error(), "choose another --sync-addr") {
		t.Fatalf("got %v, want an error naming --sync-addr", err)
	}
	if second.evalLn != nil {
		t.Fatal("the evaluation port stays bound after the failed Listen")
	}
}
