package proxy

import (
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pennon-dev/pennon/evaluator"
)

// TestCounterTableConcurrent resolves keys from several goroutines while
// the table grows: every key gets exactly one counter (the same one on
// every lookup), increments land in its series, and each visits every key
// once.
func TestCounterTableConcurrent(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), nil, 100)
	m.usage = newUsage(m)
	const keys, workers = 3000, 4
	key := func(i int) counterKey {
		return counterKey{flag: "f" + strconv.Itoa(i/3), variant: []string{"a", "b", ""}[i%3],
			reason: []evaluator.Reason{evaluator.ReasonTargetingMatch, evaluator.ReasonStatic, evaluator.ReasonError}[i%3]}
	}
	m.counter(key(0)) // the first label set: its own series, not _other
	got := make([][]*usageEvalCounter, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[w] = make([]*usageEvalCounter, keys)
			for j := range keys {
				i := (j*7 + w*991) % keys // each worker in its own order
				c := m.counter(key(i))
				c.Inc()
				got[w][i] = c.(*usageEvalCounter)
			}
		}()
	}
	wg.Wait()
	for i := range keys {
		for w := 1; w < workers; w++ {
			if got[w][i] != got[0][i] {
				t.Fatalf("key %d resolved to two counters", i)
			}
		}
		if n := got[0][i].n.Load(); n != workers {
			t.Fatalf("key %v counted %d for usage, want %d", key(i), n, workers)
		}
	}
	seen := map[counterKey]int{}
	m.counters.each(func(e *evalCounter) { seen[e.key]++ })
	if len(seen) != keys {
		t.Fatalf("each visited %d keys, want %d", len(seen), keys)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("each visited %v %d times", k, n)
		}
	}
	// The first 100 label sets have their own series; the rest count in
	// their reason's _other series.
	// (a shared _other series is read once per key that counts into it,
	// so the sum is at least, not exactly, every increment)
	var total float64
	for i := range keys {
		total += testutil.ToFloat64(got[0][i].Counter)
	}
	if total < keys*workers {
		t.Fatalf("series hold %v increments, want at least %d", total, keys*workers)
	}
	if own := testutil.ToFloat64(got[0][0].Counter); own != workers {
		t.Fatalf("the first key's own series holds %v, want %d", own, workers)
	}
}

// TestCounterKeySeparators: keys whose fields concatenate to the same
// bytes are different keys.
func TestCounterKeySeparators(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), nil, 100)
	a := m.counter(counterKey{flag: "ab", variant: "c"})
	b := m.counter(counterKey{flag: "a", variant: "bc"})
	if a == b {
		t.Fatal(`("ab","c") and ("a","bc") share a counter`)
	}
	if m.counter(counterKey{flag: "ab", variant: "c"}) != a {
		t.Fatal("the same key resolved twice to different counters")
	}
}

func BenchmarkCounterLookup(b *testing.B) {
	m := newMetrics(prometheus.NewRegistry(), nil, 0)
	keys := make([]counterKey, 1000)
	for i := range keys {
		keys[i] = counterKey{flag: "flag-" + strconv.Itoa(i), variant: "on", reason: evaluator.ReasonTargetingMatch}
		m.counter(keys[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m.counter(keys[i%len(keys)]).Inc()
	}
}
