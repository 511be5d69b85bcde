package bench

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkBulkLoopback runs the bulk scenarios over flags/bulk-1000.json
// (~90 KB answers) closed loop at 32 connections, one target after the
// other in one process: bare-bulk (a fasthttp handler answering a real
// 90 KB bulk answer, the ceiling for that size), pennon (response cache
// on: bulk answers cached from a context's second request) and
// pennon-nocache. PENNON_BULK_REF=label=http://host:port,... adds
// external servers to the same run (e.g. the previous build's sidecar
// serving the same file). Each run lasts 3s after 1s of warm-up,
// whatever b.N is: run with -benchtime 1x. Metrics: req/s and p99-ms.
func BenchmarkBulkLoopback(b *testing.B) {
	targets := []struct {
		label string
		start func() (*Target, error)
		url   string
	}{
		{label: "bare-bulk", start: func() (*Target, error) { return startBareBulk(b) }},
		{label: "pennon", start: func() (*Target, error) { return StartPennon(PennonOptions{Flags: BulkFlags}) }},
		{label: "pennon-nocache", start: func() (*Target, error) { return StartPennon(PennonOptions{Flags: BulkFlags, CacheBytes: -1}) }},
	}
	if ref := os.Getenv("PENNON_BULK_REF"); ref != "" {
		for _, r := range strings.Split(ref, ",") {
			label, url, ok := strings.Cut(r, "=")
			if !ok {
				b.Fatalf("PENNON_BULK_REF: want label=url[,label=url], got %q", r)
			}
			targets = append(targets, struct {
				label string
				start func() (*Target, error)
				url   string
			}{label: label, url: url})
		}
	}
	for _, scen := range []string{"bulk", "bulk-zipf"} {
		sc, err := NewScenario(scen, FlagKeys{})
		if err != nil {
			b.Fatal(err)
		}
		for _, tg := range targets {
			b.Run(scen+"/"+tg.label, func(b *testing.B) {
				url := tg.url
				if tg.start != nil {
					t, err := tg.start()
					if err != nil {
						b.Fatal(err)
					}
					defer t.Close()
					url = t.URL
				}
				for b.Loop() {
					res, err := Run(context.Background(), Options{URL: url, Label: tg.label, Scenario: sc, Connections: 32,
						Duration: 3 * time.Second, Warmup: time.Second})
					if err != nil {
						b.Fatal(err)
					}
					if res.Errors > 0 {
						b.Fatalf("%d errors: %s", res.Errors, res.FirstError)
					}
					b.ReportMetric(res.Throughput, "req/s")
					b.ReportMetric(res.Latency.P99/1e3, "p99-ms")
					b.ReportMetric(res.Latency.P50/1e3, "p50-ms")
				}
			})
		}
	}
}

// startBareBulk starts bare-bulk answering what pennon answers one of the
// scenario's contexts over BulkFlags, so both send the same bytes.
func startBareBulk(b *testing.B) (*Target, error) {
	p, err := StartPennon(PennonOptions{Flags: BulkFlags, CacheBytes: -1})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	defer http.DefaultClient.CloseIdleConnections()
	res, err := http.Post(p.URL+bulkPath, "application/json", strings.NewReader(string(contextPool(1)[0])))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	b.Logf("bare-bulk answers %d bytes", len(body))
	return StartBareBody("bare-bulk", body)
}
