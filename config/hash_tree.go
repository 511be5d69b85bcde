package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"strings"
	"sync"

	"github.com/pennon-dev/pennon/internal/parallel"
)

// The flag set's identity hash (format "sha256t1") is a two-level tree over
// SHA-256 so that it can be updated in proportion to a change: the legacy
// format ("sha256:", SHA-256 of the whole canonical document) cost ~40 ms
// at 100,000 flags after every change, on every sidecar and at every
// commit, while applying the change cost 0.25 ms.
//
//   - Each flag goes to one of hashBuckets buckets by hashBucketOf(key), a
//     function of the key alone (FNV-1a, 32 bits, of the key's bytes; the
//     low 10 bits), so a change to a flag touches one bucket, and the same
//     key lands in the same bucket on every platform and in every release.
//   - A bucket's digest is SHA-256 of the bucket tag followed by, for each
//     flag in the bucket in key order, its leaf: the key's length (8 bytes,
//     big-endian), the key, the length of the flag's canonical JSON, the
//     JSON.
//   - The root is SHA-256 of the root tag, the length-prefixed `$schema`,
//     the canonical JSON of `$evaluators` and of the flag-set metadata (each
//     empty when absent, as in the canonical form), then for each non-empty
//     bucket in order its index (2 bytes, big-endian) and its digest.
//
// Every encoding is length-prefixed or fixed-size and the two tags differ,
// so two flag sets with different canonical forms give different inputs to
// some SHA-256 and the tree is as collision resistant as SHA-256 itself (no
// XOR or additive combination). Equal canonical forms give equal hashes:
// every part hashed is part of the canonical form, taken as it is there.
//
// Why two levels of 1,024 and no leaf digests: an update hashes the
// touched buckets' leaves (a thousandth of the set, ~16 KB at 100,000
// flags) and the root (34 bytes per non-empty bucket, ~35 KB), some 50 KB
// whatever the set's size up to a few hundred thousand flags; a stored
// digest per flag would add 32 bytes per flag to hash the same bytes less
// often. What each document keeps is a bucket table (hashTree) whose
// entries point at the flags it already holds: 24 bytes per flag (27 B
// retained at 100,000 flags with allocation rounding). Apply's result
// shares every bucket it does not touch.
const (
	hashFormat  = "sha256t1:"
	hashBuckets = 1 << 10
	legacyHash  = "sha256:"
	bucketTag   = "pennon flag-set hash v1 bucket\x00"
	rootTag     = "pennon flag-set hash v1 root\x00"
)

// hashBucketOf is the bucket of flag key k: FNV-1a (32-bit) over the key's
// bytes, modulo hashBuckets. It is part of the hash format: changing it
// (or hashBuckets) is a new format, not a refactoring. It is not keyed:
// keys chosen to share a bucket only make updates of that bucket cost in
// proportion to its size, never change what the hash covers, and only
// writers of flags choose keys.
func hashBucketOf[K string | []byte](k K) int {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h & (hashBuckets - 1))
}

// hashTree is a document's bucket table: immutable once built, shared by
// the documents Apply derives (each copies the table, 8 KB, and rebuilds
// only the buckets its change touches).
type hashTree struct {
	buckets []*hashBucket // hashBuckets long; nil for an empty bucket
	parts   []byte        // the root's schema, $evaluators and metadata encoding
	root    string        // the formatted hash
}

// hashBucket is one bucket's flags in key order and its digest.
type hashBucket struct {
	entries []hashEntry
	sum     [32]byte
}

// hashEntry is one flag of a bucket (the flag is shared with the document).
type hashEntry struct {
	key string
	f   *FlagDoc
}

// hashDelta is how Apply's result differs from the document it came from,
// for a hash that rebuilds only the touched buckets.
type hashDelta struct {
	base    *hashTree
	changed []string // every key put or deleted
	parts   bool     // schema, metadata or $evaluators replaced
}

// Hash is the flag set's identity: "sha256t1:" and the hex of the hash
// tree's root (see hashFormat). It is computed once per document; for a
// document from Apply on a hashed document it costs in proportion to the
// change. MatchesHash also accepts the legacy "sha256:" form.
func (d *Document) Hash() string { return d.hashTree().root }

// hashTree returns d's bucket table, building it once: from the table of
// the document Apply started from when there is one, otherwise in full.
func (d *Document) hashTree() *hashTree {
	if t := d.tree.Load(); t != nil {
		return t
	}
	var t *hashTree
	if delta := d.hashFrom.Load(); delta != nil {
		t = d.deriveTree(delta)
	} else if t = d.tree.Load(); t == nil {
		t = d.buildTree()
	}
	// Concurrent callers build equal tables; the first one stored wins.
	if !d.tree.CompareAndSwap(nil, t) {
		t = d.tree.Load()
	}
	d.hashFrom.Store(nil) // the parent's table is no longer needed
	return t
}

// hashParts encodes the root's document-level parts: `$schema`, then the
// canonical JSON of `$evaluators` and of the metadata, each length-prefixed
// and empty when absent (the canonical form omits them then).
func (d *Document) hashParts() []byte {
	var ev, md []byte
	if len(d.evaluators) > 0 {
		ev = canonicalJSON(d.evaluators)
	}
	if len(d.metadata) > 0 {
		md = canonicalJSON(d.metadata)
	}
	b := make([]byte, 0, 24+len(d.schema)+len(ev)+len(md))
	b = appendPrefixed(b, d.schema)
	b = appendPrefixed(b, ev)
	return appendPrefixed(b, md)
}

func appendPrefixed[T string | []byte](b []byte, s T) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// appendLeaf appends flag k's leaf (key and canonical JSON, each
// length-prefixed) to a bucket's input.
func appendLeaf(b []byte, k string, canon []byte) []byte {
	return appendPrefixed(appendPrefixed(b, k), canon)
}

// sumBucket computes b's digest; buf is scratch space, returned for reuse.
func (b *hashBucket) sumBucket(buf []byte) []byte {
	buf = append(buf[:0], bucketTag...)
	for _, e := range b.entries {
		buf = appendLeaf(buf, e.key, e.f.json())
	}
	b.sum = sha256.Sum256(buf)
	return buf
}

// rootHash formats the root over parts and the digests of the non-empty
// buckets (sum(i) is bucket i's digest, ok false when it is empty).
func rootHash(parts []byte, sum func(i int) (*[32]byte, bool)) string {
	scratch := hashScratch.Get().(*[]byte)
	buf := append(append((*scratch)[:0], rootTag...), parts...)
	for i := range hashBuckets {
		if s, ok := sum(i); ok {
			buf = binary.BigEndian.AppendUint16(buf, uint16(i))
			buf = append(buf, s[:]...)
		}
	}
	root := sha256.Sum256(buf)
	*scratch = buf
	hashScratch.Put(scratch)
	return hashFormat + hex.EncodeToString(root[:])
}

// hashScratch holds the buffers the root and the buckets are gathered in
// before hashing (~35 KB for the root of a large set): allocated and
// cleared after every change, they were most of an update's cost at
// 100,000 flags, where each allocation also brings the next collection of
// a large heap closer.
var hashScratch = sync.Pool{New: func() any { b := make([]byte, 0, hashBuckets*34+256); return &b }}

func (t *hashTree) finish() *hashTree {
	t.root = rootHash(t.parts, func(i int) (*[32]byte, bool) {
		if b := t.buckets[i]; b != nil {
			return &b.sum, true
		}
		return nil, false
	})
	return t
}

// buildTree builds d's table from all its flags. The flags are visited
// in key order, which is about the order their definitions sit in memory
// (Parse allocates them so), and each one's leaf is streamed into its
// bucket's SHA-256 (bucketHashers): hashing bucket by bucket instead read
// the definitions in random order and took twice as long at 100,000 flags
// (BenchmarkHash, 2026-11-30). The buckets are split between the cores,
// each reading the keys and hashing the flags of its buckets. Each bucket
// has its entries (24 bytes per flag) in an allocation of its own: one
// shared array would keep, after Apply replaced some buckets, the replaced
// flags' old definitions alive as long as any bucket of this build.
func (d *Document) buildTree() *hashTree {
	t := &hashTree{buckets: make([]*hashBucket, hashBuckets), parts: d.hashParts()}
	of := make([]uint16, len(d.keys))
	var count [hashBuckets]int
	for i, k := range d.keys {
		b := hashBucketOf(k)
		of[i] = uint16(b)
		count[b]++
	}
	for b, n := range count {
		if n > 0 {
			t.buckets[b] = &hashBucket{entries: make([]hashEntry, 0, n)}
		}
	}
	parallel.Ranges(hashBuckets, parallel.Workers(len(d.keys), 4096), func(_, from, to int) {
		hs := newBucketHashers(from, to)
		var head []byte
		// The flags are looked up a batch at a time: the lookups of a
		// batch do not depend on each other, so the CPU overlaps their
		// cache misses (as writeFlags does for the legacy hash).
		const batch = 32
		var pending [batch]int
		var flags [batch]*FlagDoc
		n := 0
		flush := func() {
			for j, i := range pending[:n] {
				flags[j] = d.Flag(d.keys[i])
			}
			for j, i := range pending[:n] {
				k, f, b := d.keys[i], flags[j], int(of[i])
				bk := t.buckets[b]
				bk.entries = append(bk.entries, hashEntry{k, f})
				canon := f.json()
				head = binary.BigEndian.AppendUint64(appendPrefixed(head[:0], k), uint64(len(canon)))
				h := hs.of(b)
				h.Write(head)
				h.Write(canon)
			}
			n = 0
		}
		for i := range d.keys {
			if b := int(of[i]); b >= from && b < to {
				pending[n] = i
				if n++; n == batch {
					flush()
				}
			}
		}
		flush()
		for b := from; b < to; b++ {
			if bk := t.buckets[b]; bk != nil {
				hs.sum(b, &bk.sum)
			}
		}
	})
	return t.finish()
}

// bucketHashers are the SHA-256 states of the buckets [from, to) while
// their leaves are streamed in, each started with the bucket tag: the
// same bytes sumBucket hashes from a bucket's entries.
type bucketHashers struct {
	from int
	hs   []hash.Hash
}

func newBucketHashers(from, to int) *bucketHashers {
	return &bucketHashers{from: from, hs: make([]hash.Hash, to-from)}
}

// of returns bucket b's hash, started on first use.
func (s *bucketHashers) of(b int) hash.Hash {
	h := s.hs[b-s.from]
	if h == nil {
		h = sha256.New()
		h.Write([]byte(bucketTag))
		s.hs[b-s.from] = h
	}
	return h
}

// sum writes bucket b's digest to dst; false if no leaf was written to it.
func (s *bucketHashers) sum(b int, dst *[32]byte) bool {
	h := s.hs[b-s.from]
	if h != nil {
		h.Sum(dst[:0])
	}
	return h != nil
}

// hashOfLeaves is Hash for a document that kept no flags (ParseCompiled):
// pieces hold every flag's leaf (appendLeaf), in key order across and
// within pieces. As in buildTree, the buckets are split between the cores,
// each reading every leaf and streaming those of its buckets.
func (d *Document) hashOfLeaves(pieces [][]byte, n int) string {
	sums := make([][32]byte, hashBuckets)
	present := make([]bool, hashBuckets)
	parallel.Ranges(hashBuckets, parallel.Workers(n, 4096), func(_, from, to int) {
		hs := newBucketHashers(from, to)
		for _, p := range pieces {
			for len(p) > 0 {
				klen := binary.BigEndian.Uint64(p)
				key := p[8 : 8+klen]
				size := 16 + klen + binary.BigEndian.Uint64(p[8+klen:])
				if b := hashBucketOf(key); b >= from && b < to {
					hs.of(b).Write(p[:size])
				}
				p = p[size:]
			}
		}
		for b := from; b < to; b++ {
			present[b] = hs.sum(b, &sums[b])
		}
	})
	return rootHash(d.hashParts(), func(i int) (*[32]byte, bool) { return &sums[i], present[i] })
}

// deriveTree builds d's table from the table of the document Apply made
// it from: the table is copied and each bucket a changed key falls in is
// rebuilt (its other flags kept as they were, the changed ones looked up
// in d: present for a put, absent for a delete).
func (d *Document) deriveTree(delta *hashDelta) *hashTree {
	base := delta.base
	t := &hashTree{buckets: slices.Clone(base.buckets), parts: base.parts}
	if delta.parts {
		t.parts = d.hashParts()
	}
	touched := map[int][]string{}
	for _, k := range delta.changed {
		b := hashBucketOf(k)
		touched[b] = append(touched[b], k)
	}
	scratch := hashScratch.Get().(*[]byte)
	buf := *scratch
	for b, keys := range touched {
		var old []hashEntry
		if ob := base.buckets[b]; ob != nil {
			old = ob.entries
		}
		entries := make([]hashEntry, 0, len(old)+len(keys))
		for _, e := range old {
			if !slices.Contains(keys, e.key) {
				entries = append(entries, e)
			}
		}
		for _, k := range keys {
			if f := d.Flag(k); f != nil {
				entries = append(entries, hashEntry{k, f})
			}
		}
		if len(entries) == 0 {
			t.buckets[b] = nil
			continue
		}
		slices.SortFunc(entries, func(x, y hashEntry) int { return strings.Compare(x.key, y.key) })
		bk := &hashBucket{entries: entries}
		buf = bk.sumBucket(buf)
		t.buckets[b] = bk
	}
	*scratch = buf
	hashScratch.Put(scratch)
	return t.finish()
}

// legacyHashOf is the legacy identity, "sha256:" and the hex of SHA-256
// over the whole canonical document: what control planes before the tree
// format signed, and what records already stored carry. It is computed
// only when a legacy value has to be checked, and memoized.
func (d *Document) legacyHashOf() string {
	if h := d.legacy.Load(); h != nil {
		return *h
	}
	sum := sha256.New()
	d.writeCanonical(sum, d.schema)
	h := legacyHash + hex.EncodeToString(sum.Sum(nil))
	d.legacy.Store(&h)
	return h
}

// HashLike returns d's hash in the format of h: the legacy "sha256:" form
// when h has that prefix, otherwise the current one. A reader replaying a
// version signed with the legacy form reports that version's hash in it,
// so a version's hash never changes format under the fleet (which would
// look like drift: a rewind and a snapshot refetch on every sidecar).
func (d *Document) HashLike(h string) string {
	if strings.HasPrefix(h, legacyHash) {
		return d.legacyHashOf()
	}
	return d.Hash()
}

// MatchesHash reports whether h is d's hash in either format: the current
// one, or the legacy "sha256:" form carried by records and changesets
// signed before the tree format (computed, in O(size), only then).
func (d *Document) MatchesHash(h string) bool { return d.HashLike(h) == h }

// DocumentHash is the hash (current format) of the document whose
// canonical JSON is canonical: Parse(canonical).Hash(). The tree needs the
// document's flags, so the bytes are parsed, and an invalid document is an
// error.
func DocumentHash(canonical []byte) (string, error) {
	d, err := Parse(canonical)
	if err != nil {
		return "", err
	}
	return d.Hash(), nil
}

// LegacyDocumentHash is the legacy "sha256:" hash of canonical document
// bytes: "sha256:" and the hex of their SHA-256.
func LegacyDocumentHash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return legacyHash + hex.EncodeToString(sum[:])
}
