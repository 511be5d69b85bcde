package proxy

import (
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

func newTestServer(tb testing.TB, doc string) *Server {
	tb.Helper()
	var h evaluator.Holder
	h.Store(mustSnapshot(tb, doc, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &h})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.cache.Close() })
	return s
}

func request(ctx *fasthttp.RequestCtx, method, path string, body []byte) {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBody(body)
}

// FuzzOFREPHandler throws arbitrary paths, methods and bodies at the router:
// it must never panic (a recovered panic is counted and fails the test) and
// every OFREP answer must be JSON.
func FuzzOFREPHandler(f *testing.F) {
	f.Add("POST", "/ofrep/v1/evaluate/flags/color", []byte(`{"context":{"plan":"premium"}}`))
	f.Add("POST", "/ofrep/v1/evaluate/flags", []byte(`{"context":{"targetingKey":"u"}}`))
	f.Add("GET", "/v1/status", []byte(nil))
	f.Add("POST", "/ofrep/v1/evaluate/flags/%00", []byte(`{"context":[]}`))
	f.Add("PUT", "/ofrep/v1/evaluate/flags/x/y", []byte(`{"context":{"a":{"b":[1,2,{"c":null}]}}}`))
	f.Add("POST", "/v1/track", []byte(`{"key":1}`))
	s := newTestServer(f, testFlags)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if path == "/v1/stream" || path == "/metrics" {
			return // streaming / prometheus output are not OFREP bodies
		}
		var ctx fasthttp.RequestCtx
		request(&ctx, method, path, body)
		h(&ctx)
		if got := ctx.Response.Body(); len(got) > 0 && !json.Valid(got) {
			t.Fatalf("%s %s: invalid JSON response %q", method, path, got)
		}
		if n := testutil.ToFloat64(s.m.panics); n != 0 {
			t.Fatalf("%s %s: handler panicked", method, path)
		}
	})
}

// Handler benchmarks run in memory (no sockets): they measure pennon's own
// cost per request. End-to-end loopback figures are in bench/README.md.
func benchmarkHandler(b *testing.B, path, body string) {
	s := newTestServer(b, benchFlags)
	h := s.Handler()
	var ctx fasthttp.RequestCtx
	bb := []byte(body)
	b.ReportAllocs()
	for b.Loop() {
		request(&ctx, "POST", path, bb)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(string(ctx.Response.Body()))
		}
	}
}

const benchFlags = `{"flags":{
 "static": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
 "targeted": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"and":[{"==":[{"var":"plan"},"premium"]},{"in":[{"var":"country"},["US","CA","GB","DE","FR","NL","SE","NO","DK","FI"]]},
   {"ends_with":[{"var":"email"},"@example.com"]},{">=":[{"var":"age"},18]},{"sem_ver":[{"var":"appVersion"},">=","2.3.0"]}]},"on","off"]}}}}`

const benchContext = `{"context":{"targetingKey":"u1","plan":"premium","country":"SE","email":"ann@example.com","age":33,"appVersion":"2.10.1"}}`

func BenchmarkHandlerStatic(b *testing.B) {
	benchmarkHandler(b, "/ofrep/v1/evaluate/flags/static", benchContext)
}

func BenchmarkHandlerTargeting5(b *testing.B) {
	benchmarkHandler(b, "/ofrep/v1/evaluate/flags/targeted", benchContext)
}

func BenchmarkHandlerBulk(b *testing.B) {
	benchmarkHandler(b, "/ofrep/v1/evaluate/flags", benchContext)
}
