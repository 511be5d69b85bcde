package proxy

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/experiment"
)

// expBenchFlags: the same 50/50 rollout, once plain and once as an
// experiment; issue 15 asks the experiment flag's throughput to stay
// within 5 % of the plain one (bench/README.md, "Experiments").
const expBenchFlags = `{"flags":{
 "rollout": {"state":"ENABLED","variants":{"new":true,"old":false},"defaultVariant":"old","targeting":{"fractional":[["new",50],["old",50]]}},
 "rollout-exp": {"state":"ENABLED","variants":{"new":true,"old":false},"defaultVariant":"old","targeting":{"fractional":[["new",50],["old",50]]},
   "experiment":{"control":"old","metrics":[{"key":"purchase"}]}}}}`

// Both run without the response cache, which experiment flags bypass (every
// answer is an exposure): the comparison isolates the recorder's cost.

// expBodies are 4,096 contexts with distinct targeting keys, cycled: the
// first pass enrols units, later ones find them known, as returning users do.
func expBodies() [][]byte {
	out := make([][]byte, 4096)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"context":{"targetingKey":"user-%d","plan":"premium"}}`, i)
	}
	return out
}

// BenchmarkHandlerExperiment compares in memory (pennon's own cost only).
func BenchmarkHandlerExperiment(b *testing.B) {
	bodies := expBodies()
	for _, flag := range []string{"rollout", "rollout-exp"} {
		b.Run(flag, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(mustSnapshot(b, expBenchFlags, 1))
			s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, Experiments: experiment.NewRecorder(0), CacheBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			handler := s.Handler()
			var ctx fasthttp.RequestCtx
			path := "/ofrep/v1/evaluate/flags/" + flag
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				request(&ctx, "POST", path, bodies[i%len(bodies)])
				i++
				handler(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatal(string(ctx.Response.Body()))
				}
			}
		})
	}
}

// BenchmarkLoopbackExperiment compares whole requests over 127.0.0.1.
func BenchmarkLoopbackExperiment(b *testing.B) {
	bodies := expBodies()
	for _, flag := range []string{"rollout", "rollout-exp"} {
		b.Run(flag, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(mustSnapshot(b, expBenchFlags, 1))
			s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, Experiments: experiment.NewRecorder(0), CacheBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Listen(); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			client := &fasthttp.HostClient{Addr: s.Addr(), MaxConns: 64, MaxIdleConnDuration: 50 * time.Millisecond,
				Dial: func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }}
			defer func() {
				client.CloseIdleConnections()
				cancel()
				if err := <-done; err != nil {
					b.Errorf("serve: %v", err)
				}
			}()
			uri := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags/" + flag
			var next atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/json")
				req.SetRequestURI(uri)
				for pb.Next() {
					req.SetBody(bodies[next.Add(1)%uint64(len(bodies))])
					if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Fatalf("%v %d", err, resp.StatusCode())
					}
				}
			})
		})
	}
}
