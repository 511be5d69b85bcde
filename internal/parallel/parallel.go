// Package parallel spreads a loop over the cores: start-up work on a big
// flag set (parsing, compiling) is one independent job per flag.
package parallel

import (
	"runtime"
	"sync"
)

// Workers is how many goroutines Ranges uses for n items when each should
// get at least perWorker of them (starting a goroutine for fewer costs more
// than it saves): at most GOMAXPROCS, at least 1.
func Workers(n, perWorker int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n/perWorker+1))
}

// Ranges calls fn(w, from, to) for w in [0, workers), each with its own
// contiguous share [from, to) of [0, n) in order, on its own goroutine when
// there is more than one, and returns when all have. A caller can keep
// per-worker state indexed by w and, since shares are in order, join
// per-worker output in index order.
func Ranges(n, workers int, fn func(w, from, to int)) {
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := Share(n, workers, w)
			fn(w, from, to)
		}()
	}
	wg.Wait()
}

// Share is worker w's share [from, to) of [0, n) in Ranges, for a caller
// that sizes per-worker state before the loop.
func Share(n, workers, w int) (from, to int) {
	if workers <= 1 {
		return 0, n
	}
	return w * n / workers, (w + 1) * n / workers
}
