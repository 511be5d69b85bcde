package config

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"sync"
)

// canonicalJSON re-encodes decoded JSON with sorted keys and no whitespace.
func canonicalJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	// A copy of exactly the encoding's size: the buffer's spare capacity
	// was a tenth of the live heap at 100,000 flags.
	return bytes.Clone(bytes.TrimRight(buf.Bytes(), "\n"))
}

// FlagJSON returns one flag's definition as canonical JSON, or nil.
func (d *Document) FlagJSON(key string) json.RawMessage {
	f := d.Flag(key)
	if f == nil {
		return nil
	}
	return slices.Clone(f.json())
}

// json is the flag's canonical JSON (shared, read-only).
func (f *FlagDoc) json() json.RawMessage {
	if f.canon != nil {
		return f.canon
	}
	return canonicalJSON(f)
}

// canonicalDoc is the document's serialised shape: what encoding/json
// writes for it is the canonical form. writeCanonical writes the same bytes
// from each flag's cached encoding (TestCanonicalAssembledMatchesEncoder).
type canonicalDoc struct {
	Schema     string                     `json:"$schema,omitempty"`
	Evaluators map[string]json.RawMessage `json:"$evaluators,omitempty"`
	Flags      map[string]*FlagDoc        `json:"flags"`
	Metadata   map[string]any             `json:"metadata,omitempty"`
}

// writeCanonical writes the canonical JSON of the document with schema
// (sorted keys, no insignificant whitespace) to w, exactly as encoding/json
// writes canonicalDoc, but from each flag's JSON encoded when it was parsed:
// encoding 100,000 flags by reflection took ~1 s, assembling them is a copy.
// The pieces are gathered in a 64 KiB chunk before they reach w: written
// one by one (four writes per flag, one of them a concatenated string) they
// cost more than hashing the bytes (BenchmarkHash/*/legacy).
func (d *Document) writeCanonical(w io.Writer, schema string) {
	buf := chunkPool.Get().(*[]byte)
	cw := chunkWriter{buf: (*buf)[:0], w: w}
	d.assembleCanonical(&cw, schema)
	cw.flush()
	*buf = cw.buf
	chunkPool.Put(buf)
}

// chunkPool keeps writeCanonical's chunks: checking a legacy hash would
// otherwise allocate 64 KiB each time.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, canonicalChunk); return &b }}

// canonicalChunk is how much writeCanonical gathers before writing: large
// enough that the per-write cost of the hash vanishes, small enough to stay
// in the CPU's cache.
const canonicalChunk = 64 << 10

// assembleCanonical appends the canonical pieces to cw in order.
func (d *Document) assembleCanonical(cw *chunkWriter, schema string) {
	head := canonicalJSON(struct {
		Schema     string                     `json:"$schema,omitempty"`
		Evaluators map[string]json.RawMessage `json:"$evaluators,omitempty"`
	}{schema, d.evaluators})
	head = head[:len(head)-1] // reopen the object
	if len(head) > 1 {
		head = append(head, ',')
	}
	cw.write(head)
	cw.writeString(`"flags":{`)
	d.writeFlags(cw, d.keys)
	cw.writeByte('}')
	if len(d.metadata) > 0 {
		cw.writeString(`,"metadata":`)
		cw.write(canonicalJSON(d.metadata))
	}
	cw.writeByte('}')
}

// writeFlags writes the members of "flags". Gathering the pieces, not
// hashing them, is what costs at scale: each flag is a map lookup and two
// reads of memory the CPU has not cached (flags sit in parse order, the
// canonical form is in key order), ~1 µs per flag at 100,000 flags against
// ~0.15 µs of SHA-256 for its bytes. So flags are looked up and touched a
// batch at a time: the loads of one batch do not depend on each other and
// the CPU overlaps their cache misses (about twice as fast at 100,000
// flags, BenchmarkHash/*/legacy).
func (d *Document) writeFlags(cw *chunkWriter, keys []string) {
	const batch = 32
	var pieces [batch]json.RawMessage
	for start := 0; start < len(keys); start += batch {
		ks := keys[start:min(start+batch, len(keys))]
		flags := [batch]*FlagDoc{}
		for i, k := range ks {
			flags[i] = d.Flag(k)
		}
		var touch byte
		for i := range ks {
			if pieces[i] = flags[i].json(); len(pieces[i]) > 0 {
				touch ^= pieces[i][0] // fetch the piece's first line now, not in the copy
			}
		}
		cw.touched ^= touch
		for i, k := range ks {
			if start+i > 0 {
				cw.writeByte(',')
			}
			if plainKey(k) {
				cw.writeByte('"')
				cw.writeString(k)
				cw.writeString(`":`)
			} else {
				cw.write(canonicalJSON(k))
				cw.writeByte(':')
			}
			cw.write(pieces[i])
		}
	}
}

// chunkWriter gathers small writes into buf and hands them to w a chunk at
// a time; with w nil it only appends (buf then holds everything written).
// Errors are dropped: writeCanonical's writers (a hash, a bytes.Buffer)
// never fail.
type chunkWriter struct {
	buf []byte
	w   io.Writer
	// touched keeps writeFlags' early reads from being optimised away.
	touched byte
}

func (c *chunkWriter) room(n int) bool {
	if c.w == nil || len(c.buf)+n <= cap(c.buf) {
		return true
	}
	c.flush()
	return n <= cap(c.buf)
}

func (c *chunkWriter) write(p []byte) {
	if c.room(len(p)) {
		c.buf = append(c.buf, p...)
		return
	}
	_, _ = c.w.Write(p) // larger than a chunk: written through, not copied
}

func (c *chunkWriter) writeString(s string) {
	if c.room(len(s)) {
		c.buf = append(c.buf, s...)
		return
	}
	_, _ = io.WriteString(c.w, s)
}

func (c *chunkWriter) writeByte(b byte) {
	c.room(1)
	c.buf = append(c.buf, b)
}

func (c *chunkWriter) flush() {
	if c.w != nil && len(c.buf) > 0 {
		_, _ = c.w.Write(c.buf)
		c.buf = c.buf[:0]
	}
}

// plainKey reports whether JSON writes k between quotes as it is. Parse
// only accepts such keys; the check keeps writeCanonical right regardless.
func plainKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// canonicalSize estimates the canonical length, to size a buffer once.
func (d *Document) canonicalSize() int {
	n := 64
	for _, k := range d.keys {
		n += len(k) + 4 + len(d.Flag(k).json())
	}
	return n
}

// Canonical returns deterministic JSON for the document (sorted keys, no
// insignificant whitespace); Parse(Canonical()) gives an equal document.
func (d *Document) Canonical() []byte {
	cw := chunkWriter{buf: make([]byte, 0, d.canonicalSize())}
	d.assembleCanonical(&cw, d.schema)
	return cw.buf
}
