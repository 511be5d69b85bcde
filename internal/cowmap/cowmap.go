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

// maxShards bounds the shard table (32 KB of pointers, copied per edit).
const maxShards = 1 << 12

var seed = maphash.MakeSeed()

// Map is an immutable map from string to V. The zero value is not usable;
// build one with New and Set, then share it and derive edited copies with
// Edit. Reads never lock and are safe from any number of goroutines.
type Map[V any] struct {
	shards []map[string]V // len is a power of two
	mask   uint64
	n      int
}

// New returns an empty map sized for about hint entries. Fill it with Set
// before sharing it.
func New[V any](hint int) *Map[V] {
	k := shardsFor(hint)
	m := &Map[V]{shards: make([]map[string]V, k), mask: uint64(k - 1)}
	per := hint/k + 1
	for i := range m.shards {
		m.shards[i] = make(map[string]V, per)
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

func (m *Map[V]) shard(k string) uint64 {
	if m.mask == 0 {
		return 0 // one shard: no hash needed
	}
	return maphash.String(seed, k) & m.mask
}

// Set adds or replaces k while the map is being built. It mutates m: call
// it only before m is shared (use Edit afterwards).
func (m *Map[V]) Set(k string, v V) {
	s := m.shards[m.shard(k)]
	if _, ok := s[k]; !ok {
		m.n++
	}
	s[k] = v
}

// Get returns the value for k.
func (m *Map[V]) Get(k string) (V, bool) {
	v, ok := m.shards[m.shard(k)][k]
	return v, ok
}

// Len is the number of entries.
func (m *Map[V]) Len() int { return m.n }

// All iterates over every entry in no particular order.
func (m *Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, s := range m.shards {
			for k, v := range s {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// Editor collects the changes of one Edit.
type Editor[V any] struct {
	m      *Map[V]
	copied map[uint64]bool // shards already copied for this edit
}

// Edit returns a new map: m with the changes fn makes through the Editor.
// m itself is never modified; the result shares every shard fn did not
// write. When the map has grown far past the size its shard table was
// made for, the result is rebuilt with more shards (O(n), rare).
func (m *Map[V]) Edit(fn func(e *Editor[V])) *Map[V] {
	next := &Map[V]{shards: make([]map[string]V, len(m.shards)), mask: m.mask, n: m.n}
	copy(next.shards, m.shards)
	e := &Editor[V]{m: next, copied: map[uint64]bool{}}
	fn(e)
	if want := shardsFor(next.n); want > 4*len(next.shards) {
		grown := New[V](next.n)
		for k, v := range next.All() {
			grown.Set(k, v)
		}
		return grown
	}
	return next
}

func (e *Editor[V]) writable(k string) map[string]V {
	i := e.m.shard(k)
	if !e.copied[i] {
		old := e.m.shards[i]
		s := make(map[string]V, len(old)+1)
		for k, v := range old {
			s[k] = v
		}
		e.m.shards[i] = s
		e.copied[i] = true
	}
	return e.m.shards[i]
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
