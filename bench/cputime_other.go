//go:build !linux

package bench

import "time"

// threadCPU runs fn; per-thread CPU time is only read on Linux, elsewhere
// it reports 0.
func threadCPU(fn func() error) (time.Duration, error) { return 0, fn() }
