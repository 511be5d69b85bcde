package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// TestRanges: every index is visited exactly once, each worker's share is
// contiguous and the shares are in worker order.
func TestRanges(t *testing.T) {
	for _, c := range []struct{ n, workers int }{{0, 1}, {1, 1}, {10, 1}, {10, 3}, {7, 7}, {1000, 2}, {3, 5}} {
		seen := make([]atomic.Int32, c.n)
		froms := make([]int, c.workers)
		tos := make([]int, c.workers)
		Ranges(c.n, c.workers, func(w, from, to int) {
			froms[w], tos[w] = from, to
			for i := from; i < to; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			if n := seen[i].Load(); n != 1 {
				t.Fatalf("n=%d workers=%d: index %d visited %d times", c.n, c.workers, i, n)
			}
		}
		for w := range max(c.workers, 1) {
			if from, to := Share(c.n, c.workers, w); from != froms[w] || to != tos[w] {
				t.Fatalf("n=%d workers=%d: Share(%d) = %d–%d, Ranges gave %d–%d", c.n, c.workers, w, from, to, froms[w], tos[w])
			}
		}
		if c.workers > 1 {
			for w := range c.workers {
				if w > 0 && froms[w] != tos[w-1] || froms[0] != 0 || tos[c.workers-1] != c.n {
					t.Fatalf("n=%d workers=%d: shares %v–%v are not contiguous in order", c.n, c.workers, froms, tos)
				}
			}
		}
	}
}

func TestWorkers(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	for _, c := range []struct{ n, per, want int }{{0, 256, 1}, {255, 256, 1}, {256, 256, min(2, procs)}, {1 << 20, 256, procs}} {
		if got := Workers(c.n, c.per); got != c.want {
			t.Errorf("Workers(%d, %d) = %d, want %d", c.n, c.per, got, c.want)
		}
	}
}
