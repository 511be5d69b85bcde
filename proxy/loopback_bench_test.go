package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

// BenchmarkLoopbackStatic and BenchmarkLoopbackTargeting5 measure a whole
// request over a real 127.0.0.1 TCP connection (kernel, parsing, routing,
// evaluation, response), which the in-memory handler benchmarks leave out.
// Parallel clients, so the figure is throughput on this machine's cores.
func BenchmarkLoopbackStatic(b *testing.B) {
	benchmarkLoopback(b, "/ofrep/v1/evaluate/flags/static")
}

func BenchmarkLoopbackTargeting5(b *testing.B) {
	benchmarkLoopback(b, "/ofrep/v1/evaluate/flags/targeted")
}

func benchmarkLoopback(b *testing.B, path string, mutate ...func(*Options, *fasthttp.Request)) {
	var h evaluator.Holder
	h.Store(mustSnapshot(b, benchFlags, 1))
	o := Options{Addr: "127.0.0.1:0", Source: &h}
	for _, m := range mutate {
		m(&o, nil)
	}
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	// Own dialer and a short idle time: fasthttp's default dialer and idle
	// cleaner leave goroutines behind for seconds, which goleak reports.
	client := &fasthttp.HostClient{Addr: s.Addr(), MaxConns: 64, MaxIdleConnDuration: 50 * time.Millisecond,
		Dial: func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }}
	defer func() {
		client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	}()
	uri := "http://" + s.Addr() + path
	body := []byte(benchContext)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI(uri)
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			req.SetBody(body)
			for _, m := range mutate {
				m(nil, req)
			}
			if err := client.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 {
				b.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
				return
			}
		}
	})
}
