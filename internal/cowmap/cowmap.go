// Package cowmap is an immutable string-keyed map whose edits copy only
// what they touch. pennon keeps a flag set in one: a one-flag change must
// cost in proportion to the change, and cloning a Go map of 100,000 flags
// alone takes ~6 ms (measured on the shared 2-vCPU bench host), six times
// the whole budget of an update. The keys are spread over shards by hash;
// an edit copies the shard table (a few KB) and the shards it writes (tens
// of entries each), and shares the rest with the map it came from.
//
// It is pure and generic so that evaluator (compiled flags) and config
// (flag definitions) share one implementation; it must not grow I/O or
// knowledge of flags.
package cowmap

import (
	"hash/maphash"
	"iter"
	"math/bits"
)

// perShard is the average shard size aimed for: small enough that copying
// a shard costs a few microseconds, large enough that the shard table of
// 100,000 entries stays at a few thousand pointers.
const perShard = 32

// maxShards bounds the number of shards (64 directories of 64 at most).
const maxShards = 1 << 12

var seed = maphash.MakeSeed()

// Map is an immutable map from string to V. The zero value is not usable;
// build one with New and Set, then share it and derive edited copies with
// Edit. Reads never lock and are safe from any number of goroutines.
//
// Shards sit in two levels (directories of up to 64 shards) so that an
// edit copies two short pointer tables, not one of thousands: copying
// 4,096 pointers while the collector runs (it always does with a heap of
// 100,000 flags) cost ~0.2 ms per edit, a fifth of the update budget.
type Map[V any] struct {
	dirs     [][]map[string]V // len is a power of two; each dir holds 1<<dirShift shards
	dirShift uint
	mask     uint64 // shards - 1
	n        int
}

// New returns an empty map sized for about hint entries. Fill it with Set
// before sharing it.
func New[V any](hint int) *Map[V] {
	k := shardsFor(hint)
	shift := uint(bits.Len(uint(k-1))+1) / 2 // about sqrt(k) shards per dir
	per := 1 << shift
	nd := max(k/per, 1)
	m := &Map[V]{dirs: make([][]map[string]V, nd), dirShift: shift, mask: uint64(k - 1)}
	size := hint/k + 1
	for d := range m.dirs {
		m.dirs[d] = make([]map[string]V, min(per, k))
		for i := range m.dirs[d] {
			m.dirs[d][i] = make(map[string]V, size)
		}
	}
	return m
}

func shardsFor(n int) int {
	k := n / perShard
	if k <= 1 {
		return 1
	}
	if k > maxShards {
		k = maxShards
	}
	return 1 << bits.Len(uint(k-1))
}

// slot returns the directory and the index in it of k's shard.
func (m *Map[V]) slot(k string) (int, int) {
	if m.mask == 0 {
		return 0, 0 // one shard: no hash needed
	}
	h := maphash.String(seed, k) & m.mask
	return int(h >> m.dirShift), int(h & (1<<m.dirShift - 1))
}

// Set adds or replaces k while the map is being built. It mutates m: call
// it only before m is shared (use Edit afterwards).
func (m *Map[V]) Set(k string, v V) {
	d, i := m.slot(k)
	s := m.dirs[d][i]
	if _, ok := s[k]; !ok {
		m.n++
	}
	s[k] = v
}

// Get returns the value for k.
func (m *Map[V]) Get(k string) (V, bool) {
	d, i := m.slot(k)
	v, ok := m.dirs[d][i][k]
	return v, ok
}

// Len is the number of entries.
func (m *Map[V]) Len() int { return m.n }

// All iterates over every entry in no particular order.
func (m *Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, dir := range m.dirs {
			for _, s := range dir {
				for k, v := range s {
					if !yield(k, v) {
						return
					}
				}
			}
		}
	}
}

// Editor collects the changes of one Edit.
type Editor[V any] struct {
	m         *Map[V]
	dirCopied map[int]bool // directories already copied for this edit
	copied    map[[2]int]bool
}

// Edit returns a new map: m with the changes fn makes through the Editor.
// m itself is never modified; the result shares every directory and shard
// fn did not write. When the map has grown far past the size its shard
// table was made for, the result is rebuilt with more shards (O(n), rare).
func (m *Map[V]) Edit(fn func(e *Editor[V])) *Map[V] {
	next := &Map[V]{dirs: make([][]map[string]V, len(m.dirs)), dirShift: m.dirShift, mask: m.mask, n: m.n}
	copy(next.dirs, m.dirs)
	e := &Editor[V]{m: next, dirCopied: map[int]bool{}, copied: map[[2]int]bool{}}
	fn(e)
	if want := shardsFor(next.n); want > 4*int(next.mask+1) {
		grown := New[V](next.n)
		for k, v := range next.All() {
			grown.Set(k, v)
		}
		return grown
	}
	return next
}

func (e *Editor[V]) writable(k string) map[string]V {
	d, i := e.m.slot(k)
	if !e.dirCopied[d] {
		e.m.dirs[d] = append([]map[string]V(nil), e.m.dirs[d]...)
		e.dirCopied[d] = true
	}
	if !e.copied[[2]int{d, i}] {
		old := e.m.dirs[d][i]
		s := make(map[string]V, len(old)+1)
		for k, v := range old {
			s[k] = v
		}
		e.m.dirs[d][i] = s
		e.copied[[2]int{d, i}] = true
	}
	return e.m.dirs[d][i]
}

// Get reads the map as edited so far.
func (e *Editor[V]) Get(k string) (V, bool) { return e.m.Get(k) }

// Set adds or replaces k.
func (e *Editor[V]) Set(k string, v V) {
	s := e.writable(k)
	if _, ok := s[k]; !ok {
		e.m.n++
	}
	s[k] = v
}

// Delete removes k; it reports whether k was present.
func (e *Editor[V]) Delete(k string) bool {
	if _, ok := e.m.Get(k); !ok {
		return false
	}
	delete(e.writable(k), k)
	e.m.n--
	return true
}
