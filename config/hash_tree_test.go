package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hashBase has every part the hash covers: $schema, $evaluators, metadata
// and flags with targeting, pennon fields and prerequisites.
const hashBase = `{"$schema":"https://flagd.dev/schema/v0/flags.json",` +
	`"$evaluators":{"internal":{"ends_with":[{"var":"email"},"@x.dev"]}},` +
	`"metadata":{"team":"web"},"flags":{` +
	`"alpha":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"team-a","targeting":{"if":[{"$ref":"internal"},"on","off"]}},` +
	`"beta":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off","prerequisites":{"alpha":"on"}},` +
	`"gamma":{"state":"ENABLED","variants":{"a":"a","b":"b"},"defaultVariant":"a"}}}`

// TestHashFollowsTheCanonicalForm: documents whose canonical forms are
// equal hash alike (both formats), and a one-byte change anywhere the
// canonical form has content — a flag, a key, metadata, $evaluators,
// $schema — changes both. Swapping two flags' definitions between their
// keys changes it too (a leaf binds its key to its JSON).
func TestHashFollowsTheCanonicalForm(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		same bool
	}{
		{"another layout and member order", strings.ReplaceAll(strings.Replace(hashBase, `"metadata":{"team":"web"},`, ``, 1), `"flags":{`, "\n  \"metadata\" : {\"team\":\"web\"},\n\"flags\" : {"), true},
		{"empty metadata is omitted", `{"flags":{},"metadata":{}}`, true},
		{"one byte of a flag", strings.Replace(hashBase, `"team-a"`, `"team-b"`, 1), false},
		{"one byte of a key", strings.Replace(hashBase, `"gamma":`, `"gammb":`, 1), false},
		{"one byte of metadata", strings.Replace(hashBase, `"web"`, `"wec"`, 1), false},
		{"one byte of $evaluators", strings.Replace(hashBase, `"@x.dev"`, `"@y.dev"`, 1), false},
		{"one byte of $schema", strings.Replace(hashBase, `v0/flags`, `v1/flags`, 1), false},
		{"a flag deleted", strings.Replace(hashBase, `,"gamma":{"state":"ENABLED","variants":{"a":"a","b":"b"},"defaultVariant":"a"}`, ``, 1), false},
		{"two definitions swapped between their keys", `{"flags":{"x":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"},"y":{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"}}}`, false},
	}
	base, err := Parse([]byte(hashBase))
	if err != nil {
		t.Fatal(err)
	}
	swapped, _ := Parse([]byte(`{"flags":{"x":{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"},"y":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`))
	empty, _ := Parse([]byte(`{"flags":{}}`))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			ref := base
			switch {
			case strings.HasPrefix(tc.name, "two definitions"):
				ref = swapped
			case strings.HasPrefix(tc.name, "empty metadata"):
				ref = empty
			}
			if canonSame := string(doc.Canonical()) == string(ref.Canonical()); canonSame != tc.same {
				t.Fatalf("canonical forms equal: %v, want %v (the case is wrong)", canonSame, tc.same)
			}
			if got := doc.Hash() == ref.Hash(); got != tc.same {
				t.Fatalf("hashes equal: %v, want %v (%s, %s)", got, tc.same, doc.Hash(), ref.Hash())
			}
			if got := doc.HashLike(legacyHash) == ref.HashLike(legacyHash); got != tc.same {
				t.Fatalf("legacy hashes equal: %v, want %v", got, tc.same)
			}
			if got := doc.MatchesHash(ref.Hash()); got != tc.same {
				t.Fatalf("MatchesHash(the other's hash) = %v, want %v", got, tc.same)
			}
			if got := doc.Hash() == specHash(doc); !got {
				t.Fatalf("Hash %s, the format as documented %s", doc.Hash(), specHash(doc))
			}
		})
	}
}

// specHash computes the "sha256t1" hash as hash_tree.go and docs/config.md
// describe it, from the document's public pieces, independently of the
// bucket table: the format is a contract with every sidecar.
func specHash(d *Document) string {
	fnv := func(k string) uint32 {
		h := uint32(2166136261)
		for _, c := range []byte(k) {
			h = (h ^ uint32(c)) * 16777619
		}
		return h
	}
	prefixed := func(b []byte, s []byte) []byte {
		return append(binary.BigEndian.AppendUint64(b, uint64(len(s))), s...)
	}
	buckets := map[uint32][]string{}
	for _, k := range d.FlagKeys() {
		b := fnv(k) % 1024
		buckets[b] = append(buckets[b], k)
	}
	root := []byte("pennon flag-set hash v1 root\x00")
	root = prefixed(root, []byte(d.schema))
	var ev, md []byte
	if len(d.evaluators) > 0 {
		ev = canonicalJSON(d.evaluators)
	}
	if len(d.Metadata()) > 0 {
		md = canonicalJSON(d.Metadata())
	}
	root = prefixed(prefixed(root, ev), md)
	for b := range uint32(1024) {
		keys := buckets[b]
		if len(keys) == 0 {
			continue
		}
		slices.Sort(keys)
		in := []byte("pennon flag-set hash v1 bucket\x00")
		for _, k := range keys {
			in = prefixed(prefixed(in, []byte(k)), d.FlagJSON(k))
		}
		sum := sha256.Sum256(in)
		root = append(binary.BigEndian.AppendUint16(root, uint16(b)), sum[:]...)
	}
	sum := sha256.Sum256(root)
	return "sha256t1:" + hex.EncodeToString(sum[:])
}

// TestHashFormatIsPinned: the format is what control planes sign and
// sidecars recompute, across platforms and releases. The bucket function
// is FNV-1a (32-bit; its published test vectors for "a" and "foobar")
// modulo 1024, and a fixed document has a fixed hash (the value was also
// computed by a separate Python script following docs/config.md, from the
// document's canonical bytes). If this test fails the format changed: that
// needs a new prefix, not new constants here.
func TestHashFormatIsPinned(t *testing.T) {
	for k, want := range map[string]int{"": 0x811c9dc5 & 1023, "a": 0xe40c292c & 1023, "foobar": 0xbf9cf968 & 1023, "flag-10": 39, "checkout": 825} {
		if got := hashBucketOf(k); got != want {
			t.Errorf("hashBucketOf(%q) = %d, want %d", k, got, want)
		}
		if got := hashBucketOf([]byte(k)); got != want {
			t.Errorf("hashBucketOf([]byte(%q)) = %d, want %d", k, got, want)
		}
	}
	doc, err := Parse([]byte(hashBase))
	if err != nil {
		t.Fatal(err)
	}
	const want = "sha256t1:c51877ee561ddf91cd9c4050d1921d41ae1edba5f0a9d84890ed5d1e29bb639d"
	if got := doc.Hash(); got != want {
		t.Fatalf("hash of the pinned document %s, want %s", got, want)
	}
	if got := Empty().Hash(); got != specHash(Empty()) {
		t.Fatalf("empty document: %s, spec %s", got, specHash(Empty()))
	}
}

// TestMatchesHash: a reader accepts the current hash and the legacy
// "sha256:" one of exactly this document, and nothing else.
func TestMatchesHash(t *testing.T) {
	doc, _ := Parse([]byte(hashBase))
	other, _ := Parse([]byte(strings.Replace(hashBase, `"team-a"`, `"team-b"`, 1)))
	legacy := LegacyDocumentHash(doc.Canonical())
	tree := doc.Hash()
	tests := []struct {
		name string
		h    string
		want bool
	}{
		{"current format", tree, true},
		{"legacy format of this document", legacy, true},
		{"legacy format of another document", LegacyDocumentHash(other.Canonical()), false},
		{"current format of another document", other.Hash(), false},
		{"legacy prefix on the tree digest", "sha256:" + strings.TrimPrefix(tree, "sha256t1:"), false},
		{"tree prefix on the legacy digest", "sha256t1:" + strings.TrimPrefix(legacy, "sha256:"), false},
		{"legacy digest in upper case", strings.ToUpper(legacy[:7]) + strings.ToUpper(legacy[7:]), false},
		{"legacy digest cut short", legacy[:len(legacy)-1], false},
		{"an unknown format", "sha256t2:" + strings.TrimPrefix(tree, "sha256t1:"), false},
		{"empty", "", false},
		{"prefix only", "sha256:", false},
	}
	for _, tc := range tests {
		if got := doc.MatchesHash(tc.h); got != tc.want {
			t.Errorf("%s: MatchesHash(%q) = %v, want %v", tc.name, tc.h, got, tc.want)
		}
	}
	if got, want := doc.HashLike(legacy), legacy; got != want {
		t.Fatalf("HashLike(legacy) = %s, want %s", got, want)
	}
	if h, err := DocumentHash(doc.Canonical()); err != nil || h != tree {
		t.Fatalf("DocumentHash(Canonical()) = %s, %v; want %s", h, err, tree)
	}
	if _, err := DocumentHash([]byte(`{"flags":`)); err == nil {
		t.Fatal("DocumentHash of invalid bytes gave no error")
	}
}

// TestHashAfterUnhashedApplies: documents applied one after another and
// hashed only at the end (each pending on its parent's table), concurrent
// Hash calls on one document, and a parent never hashed all give the hash
// of a full build.
func TestHashAfterUnhashedApplies(t *testing.T) {
	doc, _ := Parse([]byte(hashBase))
	_ = doc.Hash()
	put := func(d *Document, key, def string) *Document {
		t.Helper()
		next, err := d.Apply(&Changeset{Changes: []Change{{Flag: key, Op: OpPut, Definition: []byte(def)}}})
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	a := put(doc, "delta", `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`)
	b := put(a, "gamma", `{"state":"DISABLED","variants":{"a":"a"},"defaultVariant":"a"}`)
	c, err := b.Apply(&Changeset{Changes: []Change{{Flag: "delta", Op: OpDelete}}, Metadata: map[string]any{"team": "api"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.hashFrom.Load() == nil {
		t.Fatal("the third apply does not build on its parents' pending tables")
	}
	var wg sync.WaitGroup
	hashes := make([]string, 8)
	for i := range hashes {
		wg.Go(func() { hashes[i] = c.Hash() })
	}
	wg.Wait()
	full, _ := Parse(c.Canonical())
	for i, h := range hashes {
		if h != full.Hash() || h != specHash(c) {
			t.Fatalf("call %d: %s, full build %s", i, h, full.Hash())
		}
	}
	for _, d := range []*Document{a, b} {
		if d.tree.Load() == nil || d.hashFrom.Load() != nil {
			t.Fatal("an intermediate document's table was not kept (or its parent's not released)")
		}
		if again, _ := Parse(d.Canonical()); d.Hash() != again.Hash() {
			t.Fatalf("intermediate %s, full build %s", d.Hash(), again.Hash())
		}
	}
	never, _ := Parse([]byte(hashBase))
	if put(never, "delta", `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`).Hash() != a.Hash() {
		t.Fatal("a child of a document never hashed differs")
	}
}
