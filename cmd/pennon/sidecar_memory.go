package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"

	"go.uber.org/zap"
)

// sidecarGOGC is the sidecar process's GC target once its flag set is
// loaded, when GOGC is not set.
//
// Why not Go's 100: a sidecar's live heap is small (5-9 MiB at 1,000
// flags: the parsed and compiled flag set, metrics, the response cache's
// counters) and it allocates little per request (about 300 bytes for a
// bulk answer over 1,000 flags, less for one flag), so a heap of 1.25x the
// live one costs two collections a second under full load (0.6 % of a core
// more than GOGC=100) and keeps 4-6 MiB of every pod's memory that
// GOGC=100 would hold as headroom (bench/results/sidecar.md, "Memory"). It stays proportional to
// the live heap, unlike a fixed GOMEMLIMIT, so a sidecar with 100,000 flags
// is not driven into back-to-back collections; and it is set after
// start-up, so parsing a large first flag set is not slowed by it.
// Operators override it with the standard GOGC (and GOMEMLIMIT) variables,
// which the runtime reads itself.
const sidecarGOGC = 25

// sidecarStartupGOGC is the GC target while the sidecar parses its first
// flag set, when GOGC is not set. Parsing allocates several times the flag
// set it keeps (430 MB for 100,000 flags, of which 90 MB stay), and the
// kept objects end up spread over spans the garbage shared: collecting
// more often lets them fill the slots the garbage left instead. At 100,000
// flags, 2 s after listening (bench/results/scale.md): GOGC 100 during
// start-up 164-170 MB RSS and 2.26 s of CPU, 70: 151-153 MB and 2.36 s,
// 50: 142-149 MB and 2.45 s, 35: 132-134 MB and 2.65 s, 25: 3.9 s of CPU.
const sidecarStartupGOGC = 50

// sidecarGCPercent returns want, the GC percent the sidecar sets, and false when
// the operator's GOGC is in the environment and must win. An empty GOGC
// (e.g. a template that rendered nothing) counts as not set.
func sidecarGCPercent(lookup func(string) (string, bool), want int) (int, bool) {
	if v, set := lookup("GOGC"); set && v != "" {
		return 0, false
	}
	return want, true
}

// applySidecarGC sets the sidecar's GC default for serving and returns the
// GC target in force, for the log.
func applySidecarGC() string { return applyGCPercent(sidecarGOGC) }

// applyStartupGC sets the GC target for loading the first flag set
// (sidecarStartupGOGC), unless the operator set GOGC.
func applyStartupGC() string { return applyGCPercent(sidecarStartupGOGC) }

func applyGCPercent(want int) string {
	pct, ok := sidecarGCPercent(os.LookupEnv, want)
	if !ok {
		return "GOGC=" + os.Getenv("GOGC") + " (environment)"
	}
	debug.SetGCPercent(pct)
	return "GOGC=" + strconv.Itoa(pct)
}

// releaseStartupMemory runs once the sidecar listens: in file mode with its
// flag set loaded, in remote mode usually before the first snapshot arrives.
// It is only for `pennon sidecar`, not for `pennon dev`, whose process also
// runs a control plane.
//
// Start-up touches memory that serving never touches again: every
// package's initialisation code in this one binary (the control plane, the
// embedded NATS server, the bench plots, ...) and the garbage of parsing
// the flag document. It gives both back: the heap's free pages to the OS,
// and the executable's read-only pages to the page cache (they stay there;
// the pages serving uses are mapped again by minor faults, without I/O). At
// 1,000 flags that is 8-10 MiB of resident memory the process would
// otherwise keep to no purpose. It also sets the GC default for serving
// now, so that parsing a large first flag file runs at the start-up target
// (sidecarStartupGOGC) rather than at 25.
func releaseStartupMemory(log *zap.Logger) {
	gc := applySidecarGC()
	debug.FreeOSMemory()
	exe, err := releaseExecutablePages()
	if err != nil {
		// The pages stay mapped and nothing else changes (e.g. a seccomp
		// profile refusing madvise): worth a line, not an alarm.
		log.Info("executable pages not released", zap.Error(err))
	}
	log.Info("start-up memory released", zap.String("gc", gc), zap.Int64("executable_bytes", exe),
		zap.String("heap_released", mib(readMetric("/memory/classes/heap/released:bytes"))))
}

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func mib(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }
