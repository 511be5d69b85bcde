package bench

import (
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// clockThreadCPUTime is CLOCK_THREAD_CPUTIME_ID from <time.h>: the
// scheduler's exact run time of the calling thread (getrusage's thread
// times only advance by scheduler ticks, too coarse for a sub-millisecond
// update).
const clockThreadCPUTime = 3

func threadNow() (time.Duration, bool) {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano()), errno == 0
}

// threadCPU runs fn on one locked OS thread and returns the CPU time that
// thread spent. On a shared, loaded machine wall time mostly measures the
// wait for a core; CPU time is what the work itself costs. fn must not
// start goroutines to do its work (Apply and Compile do not); garbage
// collection on other threads is not counted.
func threadCPU(fn func() error) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, ok := threadNow()
	err := fn()
	after, ok2 := threadNow()
	if !ok || !ok2 {
		return 0, err
	}
	return after - before, err
}
