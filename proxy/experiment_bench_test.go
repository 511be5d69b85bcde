package proxy

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

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

// BenchmarkLoopbackExperiment compares whole requests over 127.0.0.1,
// through the same harness as the other loopback benchmarks.
func BenchmarkLoopbackExperiment(b *testing.B) {
	bodies := expBodies()
	for _, flag := range []string{"rollout", "rollout-exp"} {
		b.Run(flag, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(mustSnapshot(b, expBenchFlags, 1))
			var next atomic.Uint64
			benchmarkLoopback(b, "/ofrep/v1/evaluate/flags/"+flag, func(o *Options, r *fasthttp.Request) {
				if o != nil {
					o.Source, o.Experiments, o.CacheBytes = &h, experiment.NewRecorder(0), -1
				}
				if r != nil {
					r.SetBody(bodies[next.Add(1)%uint64(len(bodies))])
				}
			})
		})
	}
}

// Every path that answers an experiment flag records the exposure once per
// unit: single and bulk OFREP evaluations and flagd's gRPC services
// (Server.EvaluateFlag); the plain flag beside it is never exposed.
func TestExperimentExposuresOnEveryPath(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, expBenchFlags, 1))
	rec := experiment.NewRecorder(0)
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, Experiments: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.cache.Close()
	handler := s.Handler()
	var ctx fasthttp.RequestCtx
	for _, c := range []struct{ path, unit string }{
		{"/ofrep/v1/evaluate/flags/rollout-exp", "single"},
		{"/ofrep/v1/evaluate/flags/rollout-exp", "single"}, // the same unit again
		{"/ofrep/v1/evaluate/flags", "bulk"},
		{"/ofrep/v1/evaluate/flags/rollout", "plain-only"},
	} {
		request(&ctx, "POST", c.path, []byte(`{"context":{"targetingKey":"`+c.unit+`"}}`))
		handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%s: %d %s", c.path, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	snap := h.Current()
	ec := evaluator.NewContext()
	if err := ec.Decode([]byte(`{"targetingKey":"grpc"}`), evaluator.Limits{}); err != nil {
		t.Fatal(err)
	}
	s.EvaluateFlag(snap, snap.Flag("rollout-exp"), ec)
	raw, err := rec.Take()
	if err != nil || raw == nil {
		t.Fatalf("take: %s %v", raw, err)
	}
	var d experiment.Delta
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var units uint64
	for _, v := range d.Flags["rollout-exp"] {
		units += v.Exposed
	}
	if units != 3 || len(d.Flags) != 1 {
		t.Fatalf("exposures %s, want 3 units (single, bulk, grpc) of rollout-exp only", raw)
	}
}
