package bench

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRunReload: every rewrite style is served, change after change, with
// the interval check at one hour (so only the directory watch can see
// them), and the result reports every change. No timing is asserted: the
// figures are for bench/README.md.
func TestRunReload(t *testing.T) {
	for _, style := range ReloadStyles {
		t.Run(style, func(t *testing.T) {
			res, err := RunReload(context.Background(), ReloadOptions{Style: style, Changes: 10, Flags: 50, Interval: time.Hour, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Changes != 10 || !res.Watch || res.Style != style || res.P50 <= 0 || res.Max < res.P99 || res.P99 < res.P50 {
				t.Fatalf("result %+v", res)
			}
			if !strings.Contains(res.String(), style) {
				t.Errorf("String() = %q", res.String())
			}
		})
	}
	if _, err := RunReload(context.Background(), ReloadOptions{Style: "scp", Changes: 1}); err == nil || !strings.Contains(err.Error(), "allowed: configmap, rename, inplace") {
		t.Fatalf("unknown style: %v", err)
	}
}

// TestReloadDoc: the marker flag is spliced into a valid document.
func TestReloadDoc(t *testing.T) {
	for _, n := range []int{1, 6} {
		d := string(reloadDoc(n, 3))
		if !strings.Contains(d, `"reload-marker":{"state":"ENABLED","variants":{"v3":3},"defaultVariant":"v3"}`) {
			t.Fatalf("%d flags: %s", n, d)
		}
	}
}

// BenchmarkFileReload times change → served for b.N changes per style
// (p50/p99/max reported as metrics, in ms), with inotify and the sidecar's
// default 1s interval as the fallback; the interval-only reference runs at
// 100ms to stay short. Run with -benchtime 200x.
func BenchmarkFileReload(b *testing.B) {
	run := func(b *testing.B, o ReloadOptions) {
		o.Changes, o.Dir = b.N, b.TempDir()
		b.ReportAllocs()
		res, err := RunReload(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(res.P50), "p50-ms")
		b.ReportMetric(ms(res.P99), "p99-ms")
		b.ReportMetric(ms(res.Max), "max-ms")
	}
	for _, style := range ReloadStyles {
		b.Run(style, func(b *testing.B) { run(b, ReloadOptions{Style: style}) })
	}
	b.Run("configmap-1000flags", func(b *testing.B) { run(b, ReloadOptions{Style: "configmap", Flags: 1000}) })
	b.Run("configmap-interval-only-100ms", func(b *testing.B) {
		run(b, ReloadOptions{Style: "configmap", NoWatch: true, Interval: 100 * time.Millisecond})
	})
}

// TestStartBareBody: the bare target of a given size answers exactly it.
func TestStartBareBody(t *testing.T) {
	body := []byte(`{"flags":[` + strings.Repeat(`{"key":"x"},`, 100) + `{"key":"y"}]}`)
	tg, err := StartBareBody("bare-bulk", body)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	res, err := http.Post(tg.URL+bulkPath, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer http.DefaultClient.CloseIdleConnections()
	defer res.Body.Close()
	got, _ := io.ReadAll(res.Body)
	if string(got) != string(body) || tg.Label != "bare-bulk" {
		t.Fatalf("label %s answered %q", tg.Label, got)
	}
}
