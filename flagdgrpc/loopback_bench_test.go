package flagdgrpc

import (
	"context"
	"testing"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

// The same flags and context as proxy's loopback benchmarks
// (BenchmarkLoopbackStatic, BenchmarkLoopbackTargeting5), so the figures
// compare gRPC ResolveBoolean with OFREP on one machine.
const benchFlags = `{"flags":{
 "static": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
 "targeted": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"and":[{"==":[{"var":"plan"},"premium"]},{"in":[{"var":"country"},["US","CA","GB","DE","FR","NL","SE","NO","DK","FI"]]},
   {"ends_with":[{"var":"email"},"@example.com"]},{">=":[{"var":"age"},18]},{"sem_ver":[{"var":"appVersion"},">=","2.3.0"]}]},"on","off"]}}}}`

var benchContext = map[string]any{"targetingKey": "u1", "plan": "premium", "country": "SE", "email": "ann@example.com", "age": 33, "appVersion": "2.10.1"}

// BenchmarkLoopbackResolveBooleanStatic and
// BenchmarkLoopbackResolveBooleanTargeting5 measure a whole ResolveBoolean
// call over a real 127.0.0.1 TCP connection (gRPC over HTTP/2, protobuf,
// context conversion, evaluation), with parallel callers on one grpc-go
// client connection as flagd's gRPC providers use it.
//
// Last measured (2 shared cores under other load, -benchtime=2s, next to
// OFREP's loopback benchmarks): static 296,446 ns/op, 5-clause targeting
// 304,460 ns/op, 230 allocs/op (client and server; OFREP: 73,891 and
// 99,685 ns/op). HTTP/2 and protobuf work on both ends dominates; see
// docs/grpc.md.
func BenchmarkLoopbackResolveBooleanStatic(b *testing.B) {
	benchmarkResolveBoolean(b, "static")
}

func BenchmarkLoopbackResolveBooleanTargeting5(b *testing.B) {
	benchmarkResolveBoolean(b, "targeted")
}

func benchmarkResolveBoolean(b *testing.B, key string) {
	c := start(b, Options{Source: newDocHolder(b, benchFlags)})
	req := &evalv1.ResolveBooleanRequest{FlagKey: key, Context: ctxStruct(b, benchContext)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := c.eval.ResolveBoolean(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if !r.GetValue() {
				b.Errorf("%s answered false", key)
				return
			}
		}
	})
}
