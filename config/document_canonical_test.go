package config

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The hash is what sidecars compare with the control plane's heartbeat, so
// documents that differ only in layout must hash alike, and any semantic
// change must change it.
func TestCanonicalIgnoresLayout(t *testing.T) {
	a := `{"flags":{"x":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"b":1,"a":"z"}}},"metadata":{"team":"web"}}`
	b := "{\n  \"metadata\": {\"team\": \"web\"},\n  \"flags\": {\"x\": {\"metadata\": {\"a\": \"z\", \"b\": 1},\n  \"defaultVariant\": \"on\", \"variants\": {\"off\": false, \"on\": true}, \"state\": \"ENABLED\"}}\n}"
	da, err := Parse([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	db, err := Parse([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if string(da.Canonical()) != string(db.Canonical()) || da.Hash() != db.Hash() {
		t.Fatalf("layout changed the canonical form:\n%s\n%s", da.Canonical(), db.Canonical())
	}
	want := `{"flags":{"x":{"state":"ENABLED","variants":{"off":false,"on":true},"defaultVariant":"on","metadata":{"a":"z","b":1}}},"metadata":{"team":"web"}}`
	if got := string(da.Canonical()); got != want {
		t.Fatalf("canonical\n got %s\nwant %s", got, want)
	}
	if h := da.Hash(); !strings.HasPrefix(h, "sha256t1:") || len(h) != len("sha256t1:")+64 {
		t.Fatalf("hash %q", h)
	}
	if h := da.HashLike("sha256:"); !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 || h != db.HashLike("sha256:") {
		t.Fatalf("legacy hash %q, of the other layout %q", h, db.HashLike("sha256:"))
	}
	dc, _ := Parse([]byte(strings.Replace(a, `"defaultVariant":"on"`, `"defaultVariant":"off"`, 1)))
	if dc.Hash() == da.Hash() {
		t.Fatal("a semantic change kept the hash")
	}
}

func TestFlagJSONIsAPutDefinition(t *testing.T) {
	doc := mustParseFile(t, "../examples/checkout.json")
	def := doc.FlagJSON("performance-mode")
	next, err := Empty().Apply(&Changeset{Changes: []Change{{Flag: "performance-mode", Op: OpPut, Definition: def}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(next.FlagJSON("performance-mode")) != string(def) {
		t.Fatalf("round trip changed the flag:\n%s\n%s", def, next.FlagJSON("performance-mode"))
	}
	if doc.FlagJSON("nope") != nil {
		t.Fatal("FlagJSON of a missing flag must be nil")
	}
}

func TestExpiresAt(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2027-01-31", time.Date(2027, 1, 31, 23, 59, 59, 999999999, time.UTC), true},
		{"2027-01-31T12:00:00+02:00", time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC), true},
		{"", time.Time{}, false},
		{"tomorrow", time.Time{}, false},
	}
	for _, tc := range tests {
		got, ok := (&FlagDoc{Expires: tc.in}).ExpiresAt()
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("ExpiresAt(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// BenchmarkHash is the identity hash computed in full, the memo cleared
// each round. "tree" is Hash as after Parse: every flag looked up and put
// in its bucket, every bucket and the root hashed (a document from Apply
// costs far less: BenchmarkHashAfterOneFlagChange). "legacy" is the
// "sha256:" hash over the whole canonical document, streamed from each
// flag's cached JSON, which a reader computes only to check a value signed
// in that format (2026-11-30, shared 2-vCPU host, load ~4: 38–55 ms at
// 100k flags, 10 allocations). Numbers: bench/results/scale.md.
func BenchmarkHash(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		for _, format := range []string{"tree", "legacy"} {
			b.Run(fmt.Sprintf("%d/%s", n, format), func(b *testing.B) {
				doc := benchDoc(b, n)
				b.SetBytes(int64(len(doc.Canonical())))
				b.ReportAllocs()
				for b.Loop() {
					rehash(doc, format, nil)
				}
			})
		}
	}
}

// rehash computes doc's hash in format ("tree" or "legacy") again, its
// memo cleared; pending is what Apply left the tree to be built from (nil:
// a full build).
func rehash(doc *Document, format string, pending *hashDelta) {
	if format == "legacy" {
		doc.legacy.Store(nil)
		_ = doc.HashLike(legacyHash)
		return
	}
	doc.tree.Store(nil)
	doc.hashFrom.Store(pending)
	_ = doc.Hash()
}

// TestHashStreamsTheCanonicalBytes: the legacy hash gathers the canonical
// pieces in chunks and batches of flags; whatever the boundaries (a flag
// larger than a chunk, flags spanning many chunks, a last batch cut short)
// it must hash exactly the bytes Canonical returns, which must be
// encoding/json's. Hash must be DocumentHash of those bytes.
func TestHashStreamsTheCanonicalBytes(t *testing.T) {
	var big strings.Builder // one flag whose JSON alone exceeds a chunk
	for i := range 12000 {
		if i > 0 {
			big.WriteByte(',')
		}
		fmt.Fprintf(&big, `"c%d"`, i)
	}
	hugeFlag := `{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},` +
		`"huge":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"country"},[` + big.String() + `]]},"on","off"]}},` +
		`"z":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}},"metadata":{"team":"core"}}`
	tests := []struct {
		name string
		doc  string
	}{
		{"no flags", `{"flags":{}}`},
		{"schema, evaluators and metadata", `{"$schema":"https://flagd.dev/schema/v0/flags.json","$evaluators":{"internal":{"ends_with":[{"var":"email"},"@x.dev"]}},` +
			`"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"$ref":"internal"},"on","off"]}}},"metadata":{"b":1,"a":2}}`},
		{"a flag larger than a chunk", hugeFlag},
		{"flags over many chunks, last batch short", string(generatedN(2*canonicalChunk/100 + 7))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			canon := doc.Canonical()
			flags := map[string]*FlagDoc{}
			for k, f := range doc.flags.All() {
				flags[k] = f
			}
			if want := canonicalJSON(canonicalDoc{Schema: doc.schema, Evaluators: doc.evaluators, Flags: flags, Metadata: doc.metadata}); !bytes.Equal(canon, want) {
				t.Fatalf("Canonical differs from encoding/json's encoding:\n got %.300s\nwant %.300s", canon, want)
			}
			if got, want := doc.HashLike("sha256:"), LegacyDocumentHash(canon); got != want {
				t.Fatalf("legacy hash %s, hash of Canonical() %s", got, want)
			}
			if got, want := doc.Hash(), mustDocumentHash(t, canon); got != want {
				t.Fatalf("Hash() = %s, DocumentHash(Canonical()) = %s", got, want)
			}
			var viaWriter bytes.Buffer
			doc.writeCanonical(&viaWriter, doc.schema)
			if !bytes.Equal(viaWriter.Bytes(), canon) {
				t.Fatalf("writeCanonical through a writer differs from Canonical (%d vs %d bytes)", viaWriter.Len(), len(canon))
			}
		})
	}
}

func mustDocumentHash(t testing.TB, canonical []byte) string {
	t.Helper()
	h, err := DocumentHash(canonical)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
