package evaluator

import "testing"

// Measured on the 2-core dev machine (go test -bench . -benchmem ./evaluator):
// see bench/results/evaluator.md for the latest table.

func BenchmarkEvaluateStatic(b *testing.B) {
	s := snap(b, map[string]string{"f": `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`})
	ctx := ctxOf(b, `{"targetingKey":"u1"}`)
	f := s.Flag("f")
	b.ReportAllocs()
	for b.Loop() {
		if r := s.EvaluateFlag(f, ctx); r.Variant != "on" {
			b.Fatal(r)
		}
	}
}

// BenchmarkEvaluateTargeting5 runs a rule with the five clause kinds the
// issue names: string equality, an in list, ends_with, a numeric compare and
// sem_ver, all of which match (so every clause runs).
func BenchmarkEvaluateTargeting5(b *testing.B) {
	s := snap(b, map[string]string{"f": targeting5})
	ctx := ctxOf(b, `{"targetingKey":"u1","plan":"premium","country":"SE","email":"ann@example.com","age":33,"appVersion":"2.10.1"}`)
	f := s.Flag("f")
	b.ReportAllocs()
	for b.Loop() {
		if r := s.EvaluateFlag(f, ctx); r.Variant != "on" {
			b.Fatal(r)
		}
	}
}

// targeting5 is the flag of BenchmarkEvaluateTargeting5.
const targeting5 = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
		"targeting":{"if":[{"and":[
			{"==":[{"var":"plan"},"premium"]},
			{"in":[{"var":"country"},["US","CA","GB","DE","FR","NL","SE","NO","DK","FI","IE","ES"]]},
			{"ends_with":[{"var":"email"},"@example.com"]},
			{">=":[{"var":"age"},18]},
			{"sem_ver":[{"var":"appVersion"},">=","2.3.0"]}
		]},"on","off"]}}`

func BenchmarkEvaluateFractional(b *testing.B) {
	s := snap(b, map[string]string{"f": `{"state":"ENABLED","variants":{"a":"a","b":"b","c":"c"},"defaultVariant":"a",
		"targeting":{"fractional":[["a",50],["b",30],["c",20]]}}`})
	ctx := ctxOf(b, `{"targetingKey":"user-12345"}`)
	f := s.Flag("f")
	b.ReportAllocs()
	for b.Loop() {
		if r := s.EvaluateFlag(f, ctx); r.Variant == "" {
			b.Fatal(r)
		}
	}
}

// context200 is a realistic ~200-byte evaluation context.
var context200 = []byte(`{"targetingKey":"user-8f14e45f","email":"ann.lee@example.com","plan":"premium","country":"SE","age":33,"appVersion":"2.10.1","beta":true,"device":{"os":"ios","model":"iPhone15,2"},"tags":["a","b"]}`)

// BenchmarkDecodeContext200B decodes a context into a pooled Context, as
// the sidecar does for every request to a flag that reads the context.
func BenchmarkDecodeContext200B(b *testing.B) { benchDecode(b, context200) }

// benchDecode decodes data into one pooled Context per iteration.
func benchDecode(b *testing.B, data []byte) {
	c := NewContext()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Decode(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// contextLong has long strings (a UUID, a browser user agent, a URL), where
// strStopAt's word-at-a-time scan pays.
var contextLong = []byte(`{"targetingKey":"5f0c6a4e-8c1d-4e2b-9a7f-3d2b1c0e9f8a","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15","url":"https://shop.example.com/checkout/cart?campaign=spring-sale-2026&ref=newsletter"}`)

func BenchmarkDecodeContextLongStrings(b *testing.B) { benchDecode(b, contextLong) }

// BenchmarkDecodeContext200BReadAll decodes the context and evaluates a
// flag that reads every member (the nested ones by path). With
// BenchmarkDecodeEvaluateTargeting5 it keeps a decoder honest that would
// defer work from Decode to the first read. Tried and not kept: building
// top-level objects and arrays on first read (BenchmarkDecodeContext200B
// 15 % faster, this one 12 % slower, in CPU time at load 6), and keeping
// top-level objects as member lists until read (1.6 % fewer instructions
// for a decode, 10 % more for this one, by callgrind).
func BenchmarkDecodeContext200BReadAll(b *testing.B) {
	benchDecodeEvaluate(b, `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
		"targeting":{"if":[{"and":[{"var":"targetingKey"},{"var":"email"},{"var":"plan"},{"var":"country"},{"var":"age"},
			{"var":"appVersion"},{"var":"beta"},{"var":"device.os"},{"var":"device.model"},{"var":"tags.0"},{"var":"tags.1"}]},"on","off"]}}`)
}

// BenchmarkDecodeEvaluateTargeting5 is the request path without HTTP:
// decode the 200-byte context, then evaluate the 5-clause flag, which
// reads five of its nine members.
func BenchmarkDecodeEvaluateTargeting5(b *testing.B) { benchDecodeEvaluate(b, targeting5) }

// benchDecodeEvaluate decodes context200 into a pooled Context and
// evaluates flag (which must answer "on") with it, per iteration.
func benchDecodeEvaluate(b *testing.B, flag string) {
	s := snap(b, map[string]string{"f": flag})
	f := s.Flag("f")
	c := NewContext()
	b.SetBytes(int64(len(context200)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Decode(context200, Limits{}); err != nil {
			b.Fatal(err)
		}
		if r := s.EvaluateFlag(f, c); r.Variant != "on" {
			b.Fatal(r)
		}
	}
}

func BenchmarkAppendCacheKey(b *testing.B) {
	s := snap(b, map[string]string{"f": rule(`{"if": [{"==": [{"var": "plan"}, "premium"]}, "red", "green"]}`)})
	ctx := ctxOf(b, string(context200))
	f := s.Flag("f")
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = f.AppendCacheKey(buf[:0], ctx)
	}
}
