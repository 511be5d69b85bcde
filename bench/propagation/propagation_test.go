package propagation

import (
	"context"
	"testing"
)

// TestRunSmall checks the harness end to end with small bounds; the
// figures in bench/results/propagation.md come from BenchmarkPropagation.
func TestRunSmall(t *testing.T) {
	for _, flags := range []int{0, 1500} {
		res, err := Run(context.Background(), Options{Sidecars: 3, Changes: 10, Flags: flags})
		if err != nil {
			t.Fatal(err)
		}
		if res.Samples != 30 || res.Flags != flags+1 || res.P50 <= 0 || res.Max < res.P99 || res.P99 < res.P50 ||
			res.CommitP50 <= 0 || res.CommitP99 < res.CommitP50 || res.AfterCommitP50 > res.P50 || res.AfterCommitP99 > res.P99 {
			t.Fatalf("implausible result %+v", res)
		}
		t.Log(res)
	}
}

// BenchmarkPropagation: go test ./bench/propagation -run xxx -bench . -benchtime 1x
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run("sidecars="+itoa(n), func(b *testing.B) {
			for b.Loop() {
				res, err := Run(context.Background(), Options{Sidecars: n, Changes: 200, SyncAlways: true})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(res.Max.Microseconds()), "max-µs")
				b.Log(res)
			}
		})
	}
}

// BenchmarkPropagationFlags is commit → applied for one sidecar (with its
// state dir, as deployed) following an environment of 1k, 10k and 100k
// flags, 50 changes each: what a one-flag change costs end to end as the
// set grows. 100k flags take about a minute to set up (the control plane
// validates and hashes the set as it is loaded), so run it alone:
//
//	go test ./bench/propagation -run xxx -bench PropagationFlags -benchtime 1x -timeout 30m
func BenchmarkPropagationFlags(b *testing.B) {
	for _, flags := range []int{1000, 10000, 100000} {
		b.Run("flags="+itoa(flags), func(b *testing.B) {
			for b.Loop() {
				res, err := Run(context.Background(), Options{Sidecars: 1, Changes: 50, SyncAlways: true, Flags: flags - 1})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(res.AfterCommitP99.Microseconds()), "after-commit-p99-µs")
				b.Log(res)
			}
		})
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
