package proxy

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// evalCounter is the evaluations counter of one (flag, variant, reason,
// error code): its pennon_evaluations_total series (past the series cap
// shared with other keys) and, when usage is counted, the evaluations
// since the last usage Take. One allocation per key holds both, with the
// key the usage report needs: at 100,000 flags a bulk answer resolves
// ~170,000 keys, and the sync.Map entry, boxed key, usage wrapper and
// separate usage count they used to take were ~45 MB of the sidecar's
// heap (bench/results/scale.md).
type evalCounter struct {
	prometheus.Counter // the series
	key                counterKey
	hash               uint64
	n                  atomic.Uint64 // since the last usage Take (usage on)
}

// usageEvalCounter is an evalCounter as handed out while usage is counted:
// each evaluation adds to the series and to the usage count. With usage
// off the bare series is handed out instead, so counting costs one atomic
// add either way it can.
type usageEvalCounter evalCounter

func (c *usageEvalCounter) Inc() { c.Counter.Inc(); c.n.Add(1) }

func (c *usageEvalCounter) Add(v float64) { c.Counter.Add(v); c.n.Add(uint64(v)) }

// counterTable finds a key's evalCounter without a lock: an open-addressing
// table of pointers, replaced (never modified in place, except by filling
// an empty slot) when it grows. Inserts are serialised by metrics.mu. A
// reader holding a table that has since grown may miss a key inserted
// after the swap; it then takes the locked path, which finds it. Growth
// copies the pointers only: O(keys) per doubling, O(1) per insert
// amortised (a copy-on-write map cost O(keys) per insert).
type counterTable struct {
	seed maphash.Seed
	cur  atomic.Pointer[counterSlots]
	n    int // entries (metrics.mu)
}

type counterSlots struct {
	s    []atomic.Pointer[evalCounter]
	mask uint64
}

func newCounterTable() *counterTable {
	t := &counterTable{seed: maphash.MakeSeed()}
	t.cur.Store(&counterSlots{s: make([]atomic.Pointer[evalCounter], 64), mask: 63})
	return t
}

// hashOf hashes every field, each followed by a separator byte so that
// ("ab","c") and ("a","bc") differ.
func (t *counterTable) hashOf(k *counterKey) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	_, _ = h.WriteString(k.flag)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(k.variant)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(string(k.reason))
	_ = h.WriteByte(0)
	_, _ = h.WriteString(string(k.code))
	return h.Sum64()
}

// find returns k's counter, nil when it is not in the table (yet).
func (t *counterTable) find(k *counterKey, h uint64) *evalCounter {
	sl := t.cur.Load()
	for i := h & sl.mask; ; i = (i + 1) & sl.mask {
		e := sl.s[i].Load()
		if e == nil {
			return nil
		}
		if e.hash == h && e.key == *k {
			return e
		}
	}
}

// insert adds e (not in the table; metrics.mu held), growing the table at
// half full so probes stay short.
func (t *counterTable) insert(e *evalCounter) {
	sl := t.cur.Load()
	if (t.n+1)*2 > len(sl.s) {
		next := &counterSlots{s: make([]atomic.Pointer[evalCounter], 2*len(sl.s)), mask: uint64(2*len(sl.s) - 1)}
		for i := range sl.s {
			if old := sl.s[i].Load(); old != nil {
				next.place(old)
			}
		}
		t.cur.Store(next)
		sl = next
	}
	sl.place(e)
	t.n++
}

func (sl *counterSlots) place(e *evalCounter) {
	i := e.hash & sl.mask
	for sl.s[i].Load() != nil {
		i = (i + 1) & sl.mask
	}
	sl.s[i].Store(e)
}

// each calls fn with every counter in the table (counters inserted while
// it runs may be left out).
func (t *counterTable) each(fn func(*evalCounter)) {
	sl := t.cur.Load()
	for i := range sl.s {
		if e := sl.s[i].Load(); e != nil {
			fn(e)
		}
	}
}
