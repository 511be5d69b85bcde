package proxy

import (
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

// BenchmarkHandlerBulk1000 is one bulk request over 1,000 flags (the
// generated set of the golden test) in memory: the server's own cost per
// answer, without sockets. Loopback figures: bench/README.md.
//
//   - nocache: the per-snapshot plan alone (response cache off).
//   - cache-hit: the default cache, the same context every time.
//   - cache-miss: the default cache, a new context every time (the cost of
//     keying, copying and inserting an answer that is never reused).
func BenchmarkHandlerBulk1000(b *testing.B) {
	doc := string(generatedFlags(1000))
	cases := []struct {
		name   string
		o      func(*Options)
		unique bool
	}{
		{"nocache", func(o *Options) { o.CacheBytes = -1 }, false},
		{"cache-hit", func(*Options) {}, false},
		{"cache-miss", func(*Options) {}, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(mustSnapshot(b, doc, 1))
			o := Options{Addr: "127.0.0.1:0", Source: &h}
			c.o(&o)
			s, err := New(o)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if s.cache != nil {
					s.cache.Close()
				}
			})
			hd := s.Handler()
			var ctx fasthttp.RequestCtx
			body := []byte(`{"context":{"targetingKey":"user-7","email":"ann@example.com","country":"DE","plan":"pro","age":33}}`)
			// Warm the cache (ristretto applies sets asynchronously).
			request(&ctx, "POST", "/ofrep/v1/evaluate/flags", body)
			hd(&ctx)
			if s.cache != nil {
				s.cache.Wait()
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if c.unique {
					i++
					body = append(body[:0], `{"context":{"targetingKey":"u`...)
					body = strconv.AppendInt(body, int64(i), 10)
					body = append(body, `","email":"ann@example.com","country":"DE"}}`...)
				}
				request(&ctx, "POST", "/ofrep/v1/evaluate/flags", body)
				hd(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatal(string(ctx.Response.Body()))
				}
			}
			b.SetBytes(int64(len(ctx.Response.Body())))
		})
	}
}

// BenchmarkBulkPlanBuild is what the first bulk request after a snapshot
// swap pays to build the plan (once per snapshot, 1,000 flags).
func BenchmarkBulkPlanBuild(b *testing.B) {
	snap := mustSnapshot(b, string(generatedFlags(1000)), 1)
	s := newTestServer(b, testFlags)
	b.ReportAllocs()
	for b.Loop() {
		newBulkPlan(snap, s.m)
	}
}
