package bench

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/pennon-dev/pennon/config"
)

// ScaleResult is what one flag-set size costs a sidecar.
type ScaleResult struct {
	Flags    int     `json:"flags"`
	DocBytes int     `json:"documentBytes"`
	ParseMs  float64 `json:"parseMillis"`   // config.Parse: decode + validate
	CompMs   float64 `json:"compileMillis"` // Document.Compile: evaluator snapshot
	HeapMB   float64 `json:"heapMB"`        // live heap held by document + snapshot
	// UpdateMs is applying a one-flag changeset and compiling the new
	// snapshot: what every pushed change costs a sidecar (median of runs).
	UpdateMs float64 `json:"updateMillis"`
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

// Scale measures parse, compile, memory and update cost for each size.
// It runs in this process and forces garbage collections, so run it alone.
func Scale(sizes []int, updates int) ([]ScaleResult, error) {
	if updates < 1 {
		updates = 1
	}
	var out []ScaleResult
	for _, n := range sizes {
		if n < 1 {
			return nil, fmt.Errorf("scale: flag count must be at least 1 (got %d)", n)
		}
		r, err := scaleOne(n, updates)
		if err != nil {
			return out, fmt.Errorf("scale %d flags: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func scaleOne(n, updates int) (ScaleResult, error) {
	data := GenerateDocument(n)
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
	snap, err := doc.Compile(1)
	if err != nil {
		return r, err
	}
	t2 := time.Now()
	runtime.GC()
	runtime.ReadMemStats(&after)
	r.ParseMs = float64(t1.Sub(t0).Microseconds()) / 1e3
	r.CompMs = float64(t2.Sub(t1).Microseconds()) / 1e3
	r.HeapMB = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)
	runtime.KeepAlive(snap)

	times := make([]time.Duration, 0, updates)
	for u := range updates {
		key := scaleKey(u % n)
		def, _ := json.Marshal(scaleFlag(u%n, u+1))
		cs := &config.Changeset{
			Env: "bench", Version: uint64(u + 2), PrevVersion: uint64(u + 1), Author: "bench",
			Time:    time.Now().UTC(),
			Changes: []config.Change{{Flag: key, Op: config.OpPut, Definition: def, BaseVersion: 1}},
		}
		start := time.Now()
		next, err := doc.Apply(cs)
		if err != nil {
			return r, fmt.Errorf("apply update %d: %w", u, err)
		}
		if _, err := next.Compile(cs.Version); err != nil {
			return r, fmt.Errorf("compile update %d: %w", u, err)
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	r.UpdateMs = float64(times[len(times)/2].Microseconds()) / 1e3
	return r, nil
}
