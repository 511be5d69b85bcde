package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/pennon-dev/pennon/config"
)

// ScaleResult is what one flag-set size costs a sidecar.
type ScaleResult struct {
	Flags    int     `json:"flags"`
	DocBytes int     `json:"documentBytes"`
	ParseMs  float64 `json:"parseMillis"`   // config.Parse: decode + validate (compiles every flag)
	HashMs   float64 `json:"hashMillis"`    // Document.Hash: the identity a sidecar checks
	CompMs   float64 `json:"compileMillis"` // Document.Compile: reuses what Parse compiled
	// StartupMs is ParseMs + HashMs + CompMs: what a sidecar does with a
	// snapshot before it can serve it.
	StartupMs float64 `json:"startupMillis"`
	HeapMB    float64 `json:"heapMB"` // live heap held by document + snapshot
	// RSSMB is the process's resident set after loading this size (the
	// document bytes kept, as a sidecar keeps its last snapshot record),
	// after returning freed memory to the OS; it includes the Go runtime
	// and the bench code itself.
	RSSMB float64 `json:"rssMB"`
	// UpdateMs is applying a one-flag changeset and compiling the new
	// snapshot (Document.Apply + Document.Compile): what every pushed
	// change costs a sidecar before the hash check (median of runs).
	UpdateMs float64 `json:"updateMillis"`
	// UpdateCPUMs is UpdateMs as CPU time of the thread doing it (median;
	// Linux only, else 0): on a loaded machine the wall time above is
	// mostly waiting for a core.
	UpdateCPUMs float64 `json:"updateCPUMillis"`
	// FullUpdateMs is the same change compiled in full (the changeset also
	// sets flag-set metadata, which every compiled flag carries): what
	// UpdateMs cost before compiling became incremental, the same-run
	// reference it is divided by.
	FullUpdateMs float64 `json:"fullUpdateMillis"`
	// UpdateHashMs is the new document's hash after that update (median):
	// it covers the whole canonical document, so it grows with the set.
	UpdateHashMs float64 `json:"updateHashMillis"`
	// SingleRPS and BulkRPS are OFREP requests/s served by the in-process
	// sidecar server holding this flag set (closed loop, loopback): one
	// targeted flag, and bulk evaluation of every flag. Zero when not run.
	SingleRPS float64 `json:"singleRequestsPerSecond,omitempty"`
	BulkRPS   float64 `json:"bulkRequestsPerSecond,omitempty"`
	// Process is the same flag set in a real `pennon sidecar` process
	// (ScaleOptions.Process): its start-up and memory are what a pod pays.
	Process *ProcessResult `json:"process,omitempty"`
}

// ScaleOptions choose what Scale measures.
type ScaleOptions struct {
	Sizes   []int
	Updates int // one-flag updates per size, the median is reported (default 1)
	// LoadFor, when > 0, also measures single-flag and bulk throughput for
	// this long each against the in-process sidecar server.
	LoadFor     time.Duration
	Connections int // for the throughput runs (default 8)
	// Process, when set, also runs each size in a real sidecar process
	// (MeasureProcess; its LoadFor and Connections are taken from these
	// options). Its Binary is the pennon executable.
	Process *ProcessOptions
}

// GenerateDocument returns a flagd-format document with n flags: 60%
// static booleans, 30% string flags with if/ends_with/in targeting, 10%
// fractional splits — roughly the mix seen in real flag sets.
func GenerateDocument(n int) []byte {
	flags := make(map[string]any, n)
	for i := range n {
		flags[scaleKey(i)] = scaleFlag(i, 0)
	}
	b, _ := json.Marshal(map[string]any{"flags": flags}) // maps of strings and numbers: cannot fail
	return b
}

func scaleKey(i int) string { return "flag-" + strconv.Itoa(i) }

// scaleFlag returns flag i's definition; rev changes its content so an
// update is a real change.
func scaleFlag(i, rev int) map[string]any {
	switch i % 10 {
	case 0, 1, 2:
		return map[string]any{
			"state": "ENABLED", "defaultVariant": "standard",
			"variants": map[string]any{"internal": "internal-" + strconv.Itoa(rev), "eu": "eu", "standard": "standard"},
			"targeting": map[string]any{"if": []any{
				map[string]any{"ends_with": []any{map[string]any{"var": "email"}, "@pennon.dev"}}, "internal",
				map[string]any{"in": []any{map[string]any{"var": "country"}, []any{"DE", "FR", "NL"}}}, "eu",
				"standard",
			}},
		}
	case 3:
		return map[string]any{
			"state": "ENABLED", "defaultVariant": "a",
			"variants": map[string]any{"a": "a", "b": "b-" + strconv.Itoa(rev)},
			"targeting": map[string]any{"fractional": []any{
				map[string]any{"cat": []any{map[string]any{"var": "$flagd.flagKey"}, map[string]any{"var": "targetingKey"}}},
				[]any{"a", 50}, []any{"b", 50},
			}},
		}
	default:
		return map[string]any{
			"state": "ENABLED", "defaultVariant": "on",
			"variants": map[string]any{"on": true, "off": false},
			"metadata": map[string]any{"rev": rev},
		}
	}
}

// Scale measures start-up, memory, update cost and (with LoadFor)
// throughput for each size. It runs in this process and forces garbage
// collections, so run it alone; sizes are measured in the order given and
// each size's memory is returned to the OS before the next.
func Scale(o ScaleOptions) ([]ScaleResult, error) {
	if o.Updates < 1 {
		o.Updates = 1
	}
	if o.Connections < 1 {
		o.Connections = 8
	}
	var out []ScaleResult
	for _, n := range o.Sizes {
		if n < 1 {
			return nil, fmt.Errorf("scale: flag count must be at least 1 (got %d)", n)
		}
		r, err := scaleOne(n, o)
		if err != nil {
			return out, fmt.Errorf("scale %d flags: %w", n, err)
		}
		out = append(out, r)
		debug.FreeOSMemory()
	}
	return out, nil
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func scaleOne(n int, o ScaleOptions) (ScaleResult, error) {
	data := GenerateDocument(n)
	r, err := scaleInProcess(n, data, o)
	if err != nil || o.Process == nil {
		return r, err
	}
	// This process's own copy of the set is garbage by now: give it back
	// first, so the two do not compete for memory.
	debug.FreeOSMemory()
	po := *o.Process
	po.LoadFor, po.Connections = o.LoadFor, o.Connections
	pr, err := MeasureProcess(context.Background(), data, po)
	if err != nil {
		return r, err
	}
	r.Process = &pr
	return r, nil
}

// scaleInProcess is scaleOne's measurement in this process.
func scaleInProcess(n int, data []byte, o ScaleOptions) (ScaleResult, error) {
	r := ScaleResult{Flags: n, DocBytes: len(data)}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	doc, err := config.Parse(data)
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	_ = doc.Hash()
	t2 := time.Now()
	snap, err := doc.Compile(1)
	if err != nil {
		return r, err
	}
	t3 := time.Now()
	r.ParseMs, r.HashMs, r.CompMs, r.StartupMs = millis(t1.Sub(t0)), millis(t2.Sub(t1)), millis(t3.Sub(t2)), millis(t3.Sub(t0))
	runtime.GC()
	runtime.ReadMemStats(&after)
	r.HeapMB = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)
	debug.FreeOSMemory()
	r.RSSMB = rssMB()

	updates := make([]time.Duration, 0, o.Updates)
	hashes := make([]time.Duration, 0, o.Updates)
	fulls := make([]time.Duration, 0, o.Updates)
	cpus := make([]time.Duration, 0, o.Updates)
	for u := range o.Updates {
		key := scaleKey(u % n)
		def, _ := json.Marshal(scaleFlag(u%n, u+1))
		cs := &config.Changeset{
			Env: "bench", Version: uint64(u + 2), PrevVersion: uint64(u + 1), Author: "bench",
			Time:    time.Now().UTC(),
			Changes: []config.Change{{Flag: key, Op: config.OpPut, Definition: def, BaseVersion: 1}},
		}
		var next *config.Document
		start := time.Now()
		cpu, err := threadCPU(func() error {
			var err error
			if next, err = doc.Apply(cs); err != nil {
				return fmt.Errorf("apply update %d: %w", u, err)
			}
			if _, err := next.Compile(cs.Version); err != nil {
				return fmt.Errorf("compile update %d: %w", u, err)
			}
			return nil
		})
		if err != nil {
			return r, err
		}
		mid := time.Now()
		cpus = append(cpus, cpu)
		_ = next.Hash()
		updates, hashes = append(updates, mid.Sub(start)), append(hashes, time.Since(mid))

		cs.Metadata = map[string]any{"rev": u}
		start = time.Now()
		if next, err = doc.Apply(cs); err != nil {
			return r, fmt.Errorf("apply update %d with metadata: %w", u, err)
		}
		if _, err := next.Compile(cs.Version); err != nil {
			return r, fmt.Errorf("compile update %d with metadata: %w", u, err)
		}
		fulls = append(fulls, time.Since(start))
	}
	r.UpdateMs, r.UpdateHashMs, r.FullUpdateMs = millis(median(updates)), millis(median(hashes)), millis(median(fulls))
	r.UpdateCPUMs = float64(median(cpus).Nanoseconds()) / 1e6
	runtime.KeepAlive(snap)
	runtime.KeepAlive(data)
	if o.LoadFor > 0 {
		if err := scaleLoad(&r, data, o); err != nil {
			return r, err
		}
	}
	return r, nil
}

// scaleLoad measures OFREP throughput against the real sidecar server
// holding the generated set: flag-0 (if/ends_with/in targeting) for one
// flag, and bulk over every flag.
func scaleLoad(r *ScaleResult, data []byte, o ScaleOptions) error {
	t, err := StartPennon(PennonOptions{Flags: data})
	if err != nil {
		return err
	}
	defer func() { _ = t.Close() }()
	r.SingleRPS, r.BulkRPS, err = loadURL(t.URL, o.LoadFor, o.Connections)
	return err
}

// loadURL runs the single-flag (flag-0) and bulk scenarios against a
// sidecar at url for loadFor each and returns their throughput.
func loadURL(url string, loadFor time.Duration, conns int) (single, bulk float64, err error) {
	for _, name := range []string{"targeting", "bulk"} {
		sc, err := NewScenario(name, FlagKeys{Targeting: scaleKey(0)})
		if err != nil {
			return 0, 0, err
		}
		res, err := Run(context.Background(), Options{URL: url, Scenario: sc, Connections: max(conns, 1), Duration: loadFor,
			Warmup: loadFor / 4, Timeout: 30 * time.Second, Label: "pennon"})
		if err != nil {
			return 0, 0, fmt.Errorf("%s load: %w", name, err)
		}
		if res.Errors > 0 {
			return 0, 0, fmt.Errorf("%s load: %d of %d requests failed (%s)", name, res.Errors, res.Requests, res.FirstError)
		}
		if name == "bulk" {
			bulk = res.Throughput
		} else {
			single = res.Throughput
		}
	}
	return single, bulk, nil
}

// rssMB is this process's resident set (VmRSS), 0 where /proc is missing.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return statusMB(b, "VmRSS:")
}
