package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkHandlerBulk1000 is one bulk request over 1,000 flags (the
// generated set of the golden test) in memory: the server's own cost per
// answer, without sockets. Loopback figures: bench/README.md.
func BenchmarkHandlerBulk1000(b *testing.B) {
	s := newTestServer(b, string(generatedFlags(1000)))
	h := s.Handler()
	var ctx fasthttp.RequestCtx
	body := []byte(`{"context":{"targetingKey":"user-7","email":"ann@example.com","country":"DE","plan":"pro","age":33}}`)
	b.ReportAllocs()
	for b.Loop() {
		request(&ctx, "POST", "/ofrep/v1/evaluate/flags", body)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(string(ctx.Response.Body()))
		}
	}
	b.SetBytes(int64(len(ctx.Response.Body())))
}
