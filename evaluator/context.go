package evaluator

import (
	"bytes"
	byteorder "encoding/binary" // "binary" is ops.go's binary-operator compiler
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/pennon-dev/pennon/internal/jsonlex"
)

// DefaultLimits are the context limits used when a Limits field is zero.
var DefaultLimits = Limits{MaxBytes: 64 << 10, MaxDepth: 16, MaxKeys: 1024}

// Context is a decoded evaluation context. Reusable: Reset it and decode the
// next request into it (pool them to keep the request path cheap). Not safe
// for concurrent use.
//
// Ownership: the maps, slices and boxed values a decoded context holds
// (everything reachable from Map()) belong to the Context and are reused by
// its next Reset or Decode; strings and numbers taken out of them stay valid
// forever (strings point into an immutable copy of the request, made fresh
// for every Decode). That reuse is what makes a pooled Context decode a
// typical request with one allocation: the evaluator and the cache-key
// functions read the values during one evaluation and keep none of them.
type Context struct {
	// fields are the top-level members in document order while there are
	// at most flatMax of them (duplicates included; a lookup scans from the
	// end, so the last one wins as in a map). A typical context has about
	// ten: comparing a few short keys costs no more than hashing one, and
	// an insert is an append, while a map of more than 8 entries leaves
	// Go's one-group small form (map assignment was ~30 % of decoding a
	// 200-byte context, clearing it on reuse another 6 %).
	fields []field
	// m holds the members instead once there are more than flatMax
	// (large), so a lookup in a context of a thousand keys stays O(1).
	// Otherwise it is empty, or (mapped) the map Map() built from fields
	// for the readers that need the whole context as one value.
	m      map[string]any
	large  bool
	mapped bool
	env    env // per-evaluation scratch, kept here so evaluation does not allocate
	mem    arena
}

// field is one top-level member of a small context.
type field struct {
	key string
	val any
}

// flatMax is the most top-level members kept as a flat list. Past it a
// lookup's linear scan (up to flatMax string comparisons for a miss) would
// cost more than a map's hash and probe.
const flatMax = 16

// get returns the top-level member k.
func (c *Context) get(k string) (any, bool) {
	if c == nil {
		return nil, false
	}
	if c.large {
		v, ok := c.m[k]
		return v, ok
	}
	for i := len(c.fields) - 1; i >= 0; i-- {
		if c.fields[i].key == k {
			return c.fields[i].val, true
		}
	}
	return nil, false
}

// set adds or replaces the top-level member k.
func (c *Context) set(k string, v any) {
	if c.mapped {
		clear(c.m) // Map()'s copy is stale: rebuilt on the next call
		c.mapped = false
	}
	if c.large {
		c.m[k] = v
		return
	}
	if len(c.fields) < flatMax {
		c.fields = append(c.fields, field{k, v})
		return
	}
	if c.m == nil {
		c.m = make(map[string]any, 2*flatMax)
	}
	for _, f := range c.fields {
		c.m[f.key] = f.val
	}
	c.m[k] = v
	c.fields = c.fields[:0]
	c.large = true
}

// clearTop removes every top-level member, keeping the storage. The flat
// list is rewound, not cleared, for the reason arena.reset gives; it holds
// at most flatMax stale entries.
func (c *Context) clearTop() {
	c.fields = c.fields[:0]
	if c.large || c.mapped {
		clear(c.m)
		c.large, c.mapped = false, false
	}
}

// lookup walks a dotted path (already split) from the top level, as
// lookup does from a map; no segments means the whole context.
func (c *Context) lookup(segs []string) any {
	if len(segs) == 0 {
		return c.Map()
	}
	v, ok := c.get(segs[0])
	if !ok {
		return nil
	}
	return lookup(v, segs[1:])
}

// lookupPath reads path exactly as a compiled var reads it: a dotted path
// always walks nested values. (Preferring a literal "a.b" key, as this once
// did, gave contexts with equal keys different answers when both a literal
// "a.b" and an object "a" were present.)
func (c *Context) lookupPath(path string) any {
	if !strings.Contains(path, ".") {
		v, _ := c.get(path)
		return v
	}
	return c.lookup(strings.Split(path, "."))
}

// arena is the reusable storage a Context decodes into. Nested objects come
// from maps, array elements from anys, and the boxes behind string and
// number values from strs and nums; Reset rewinds all of them. A chunk that
// fills up mid-decode is replaced by a larger one (values already decoded
// keep the old chunk alive), so the next decode of a similar request fits.
type arena struct {
	maps  []map[string]any
	nmaps int
	anys  []any
	strs  []string
	nums  []float64
	arrs  [][]any // the boxes behind array values
	// stack holds the elements of the arrays being decoded (a nested array
	// pushes above its parent's) until each is complete and copied to anys.
	stack []any
}

// arenaKeep bounds the chunks a Context keeps across Reset, so one huge
// request does not pin its memory in a pooled Context forever.
const arenaKeep = 4096

func (a *arena) reset() {
	for _, m := range a.maps[:a.nmaps] {
		clear(m)
	}
	a.nmaps = 0
	if len(a.maps) > arenaKeep/16 {
		a.maps = nil
	}
	// The chunks (and the array stack) are rewound, not cleared: clearing
	// pointer memory costs write barriers on every request, and what the
	// stale slots keep reachable is bounded (arenaKeep slots, pointing at
	// earlier request copies) and overwritten by the next decodes.
	if cap(a.anys) > arenaKeep {
		a.anys = nil
	}
	if cap(a.strs) > arenaKeep {
		a.strs = nil
	}
	if cap(a.arrs) > arenaKeep {
		a.arrs = nil
	}
	if cap(a.nums) > arenaKeep {
		a.nums = nil
	}
	if cap(a.stack) > arenaKeep {
		a.stack = nil
	}
	a.anys, a.strs, a.arrs, a.nums, a.stack = a.anys[:0], a.strs[:0], a.arrs[:0], a.nums[:0], a.stack[:0]
}

// newMap returns an empty map for a nested object.
func (a *arena) newMap() map[string]any {
	if a.nmaps < len(a.maps) {
		a.nmaps++
		return a.maps[a.nmaps-1]
	}
	m := make(map[string]any, 4)
	a.maps = append(a.maps, m)
	a.nmaps++
	return m
}

// eface is the runtime layout of an interface{} value (type word, data
// word), as reflect and the runtime define it. Boxing a string or float64
// into an interface allocates a copy of the value; building the interface
// around a slot of a reusable chunk instead costs nothing.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

var (
	stringType  = typeWord("")
	float64Type = typeWord(float64(0))
	arrayType   = typeWord([]any(nil))
)

func typeWord(v any) unsafe.Pointer { return (*eface)(unsafe.Pointer(&v)).typ }

// boxString returns s as an interface whose data word points into a.strs.
func (a *arena) boxString(s string) any {
	if len(s) == 0 {
		return ""
	}
	if len(a.strs) == cap(a.strs) {
		a.strs = make([]string, 0, max(2*cap(a.strs), 16))
	}
	a.strs = append(a.strs, s)
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = stringType, unsafe.Pointer(&a.strs[len(a.strs)-1])
	return v
}

// boxFloat is boxString for numbers.
func (a *arena) boxFloat(f float64) any {
	if len(a.nums) == cap(a.nums) {
		a.nums = make([]float64, 0, max(2*cap(a.nums), 8))
	}
	a.nums = append(a.nums, f)
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = float64Type, unsafe.Pointer(&a.nums[len(a.nums)-1])
	return v
}

// array copies elems into the arena and returns them as a boxed slice whose
// capacity is its length, so an append by a reader cannot overwrite the
// next array's elements.
func (a *arena) array(elems []any) any {
	if cap(a.anys)-len(a.anys) < len(elems) {
		a.anys = make([]any, 0, max(2*cap(a.anys), len(elems), 16))
	}
	n := len(a.anys)
	a.anys = append(a.anys, elems...)
	if len(a.arrs) == cap(a.arrs) {
		a.arrs = make([][]any, 0, max(2*cap(a.arrs), 4))
	}
	a.arrs = append(a.arrs, a.anys[n:len(a.anys):len(a.anys)])
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = arrayType, unsafe.Pointer(&a.arrs[len(a.arrs)-1])
	return v
}

// NewContext returns an empty context.
func NewContext() *Context { return &Context{fields: make([]field, 0, flatMax)} }

// ContextFromMap builds a context from decoded JSON (tests, the CLI).
// Numbers may be json.Number, ints or floats.
func ContextFromMap(m map[string]any) *Context {
	c := NewContext()
	for k, v := range m {
		c.set(k, normalize(v))
	}
	return c
}

// Reset empties c for reuse, keeping its memory.
func (c *Context) Reset() {
	c.clearTop()
	c.mem.reset()
}

// Map returns the decoded context (read-only). A small context is kept as
// a list, so the first call after a decode builds the map (into storage the
// Context reuses); evaluation and cache keys read members without it.
func (c *Context) Map() map[string]any {
	if c.large || c.mapped {
		return c.m
	}
	if c.m == nil {
		c.m = make(map[string]any, len(c.fields))
	}
	for _, f := range c.fields {
		c.m[f.key] = f.val
	}
	c.mapped = true
	return c.m
}

// TargetingKey returns the context's targetingKey when it is a string.
func (c *Context) TargetingKey() (string, bool) {
	v, _ := c.get("targetingKey")
	s, ok := v.(string)
	return s, ok
}

// ContextError is a context that could not be decoded.
type ContextError struct {
	Code   ErrorCode // CodeParseError or CodeInvalidContext
	Detail string
}

func (e *ContextError) Error() string { return string(e.Code) + ": " + e.Detail }

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultLimits.MaxKeys
	}
	return l
}

// Decode replaces c with the JSON object in data. Malformed JSON gives a
// *ContextError with CodeParseError; a non-object or a context past lim gives
// CodeInvalidContext. On error c is left empty.
func (c *Context) Decode(data []byte, lim Limits) error {
	c.Reset()
	lim = lim.withDefaults()
	if len(data) > lim.MaxBytes {
		return &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("context is %d bytes, the limit is %d", len(data), lim.MaxBytes)}
	}
	d := decoder{data: data, src: string(data), lim: lim, mem: &c.mem}
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] != '{' {
		v, err := d.value(0)
		if err == nil {
			err = &ContextError{Code: CodeInvalidContext, Detail: "context must be a JSON object, got " + typeName(v)}
		}
		return err
	}
	if err := d.objectInto(nil, c, 0); err != nil {
		c.Reset()
		return err
	}
	if err := d.end(); err != nil {
		c.Reset()
		return err
	}
	return nil
}

// DecodeField is Decode for member `field` of the JSON object in data (the
// OFREP request body is `{"context": {...}}`). A missing or null member gives
// an empty context; anything else that is not an object is CodeInvalidContext.
func (c *Context) DecodeField(data []byte, field string, lim Limits) error {
	return c.decodeField(data, field, lim, false)
}

// ValidateField checks data exactly as DecodeField does (syntax, shape,
// limits) but builds nothing and leaves c empty. The sidecar uses it for
// flags whose answer reads nothing from the context, so a malformed request
// is still rejected while a static flag costs no decoding.
func (c *Context) ValidateField(data []byte, field string, lim Limits) error {
	return c.decodeField(data, field, lim, true)
}

func (c *Context) decodeField(data []byte, field string, lim Limits, discard bool) error {
	c.Reset()
	lim = lim.withDefaults()
	if len(data) > lim.MaxBytes {
		return &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("request body is %d bytes, the limit is %d", len(data), lim.MaxBytes)}
	}
	d := decoder{data: data, lim: lim, discard: discard, mem: &c.mem}
	if !discard {
		d.src = string(data)
	}
	// The body is read the way flagd's OFREP handler reads it (Go's
	// json.Decoder into a struct with an `any` context), so the same request
	// gets the same answer from both: a null body or a context member that
	// is not an object means an empty context; the member name matches
	// case-insensitively and the last one wins; only the first JSON value is
	// read, so trailing data is ignored. A body that is not an object (and
	// not null) or is malformed is still an error.
	d.skipSpace()
	if d.pos >= len(d.data) || d.data[d.pos] != '{' {
		if d.pos >= len(d.data) {
			return d.fail("empty body, expected a JSON object")
		}
		isNull := d.data[d.pos] == 'n'
		if _, err := d.value(0); err != nil {
			return err
		}
		if isNull {
			return nil
		}
		return &ContextError{Code: CodeParseError, Detail: "request body must be a JSON object"}
	}
	d.pos++
	d.skipSpace()
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	seen := false
	for {
		d.skipSpace()
		start := d.pos
		if _, err := d.rawStr(); err != nil {
			return err
		}
		isField := d.pos-start >= 2 && bytes.EqualFold(d.data[start+1:d.pos-1], []byte(field))
		d.skipSpace()
		if d.peek() != ':' {
			return d.fail("expected ':' after object key")
		}
		d.pos++
		d.skipSpace()
		if isField {
			if seen {
				c.clearTop() // a later member replaces the earlier one
			}
			seen = true
			if d.peek() == '{' {
				top := c
				if discard {
					top = nil // validating builds nothing (it once filled c with empty keys)
				}
				if err := d.objectInto(nil, top, 1); err != nil {
					c.Reset()
					return err
				}
			} else if _, err := d.value(1); err != nil { // null or not an object: ignored
				return err
			}
		} else if _, err := d.value(1); err != nil {
			return err
		}
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			c.Reset()
			return d.fail("expected ',' or '}' in object")
		}
	}
}

// decoder is a small JSON parser producing the evaluator's value types
// directly, with limits on depth and key count. It exists because
// encoding/json into map[string]any costs several microseconds for a typical
// 200-byte context; this is a fraction of that.
type decoder struct {
	// discard checks syntax and limits without building values: used when
	// the flag being evaluated reads nothing from the context.
	discard bool
	data    []byte
	src     string // data as one string: unescaped strings are slices of it, not copies
	pos     int
	keys    int
	lim     Limits
	mem     *arena
}

func (d *decoder) fail(msg string) error {
	return &ContextError{Code: CodeParseError, Detail: fmt.Sprintf("invalid JSON at offset %d: %s", d.pos, msg)}
}

func (d *decoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *decoder) skipSpace() {
	// Compact JSON has no space at all: answer that with one comparison.
	if d.pos < len(d.data) && d.data[d.pos] > ' ' {
		return
	}
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) end() error {
	d.skipSpace()
	if d.pos != len(d.data) {
		return d.fail("unexpected data after the JSON value")
	}
	return nil
}

func (d *decoder) value(depth int) (any, error) {
	if depth > d.lim.MaxDepth {
		return nil, &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("context nests deeper than %d levels", d.lim.MaxDepth)}
	}
	d.skipSpace()
	switch c := d.peek(); {
	case c == '{':
		var m map[string]any
		if !d.discard {
			m = d.mem.newMap()
		}
		if err := d.objectInto(m, nil, depth); err != nil {
			return nil, err
		}
		if d.discard {
			return emptyObject0, nil
		}
		return m, nil
	case c == '[':
		return d.array(depth)
	case c == '"':
		s, err := d.str()
		if err != nil || d.discard {
			return nil, err
		}
		return d.mem.boxString(s), nil
	case c == 't':
		return trueVal, d.literal("true")
	case c == 'f':
		return falseVal, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 0:
		return nil, d.fail("unexpected end of input")
	default:
		return nil, d.fail(fmt.Sprintf("unexpected character %q", c))
	}
}

func (d *decoder) literal(word string) error {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return d.fail("invalid literal, expected " + word)
	}
	d.pos += len(word)
	return nil
}

func (d *decoder) number() (any, error) {
	start := d.pos
	if d.peek() == '-' {
		d.pos++
	}
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.peek() == '0' {
		d.pos++
	} else if digits() == 0 {
		return nil, d.fail("invalid number")
	}
	frac, exp := false, false
	if d.peek() == '.' {
		frac = true
		d.pos++
		if digits() == 0 {
			return nil, d.fail("invalid number: digits expected after '.'")
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		exp = true
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		if digits() == 0 {
			return nil, d.fail("invalid number: digits expected in exponent")
		}
	}
	if d.discard {
		// Only numbers with an exponent or many digits can be out of range.
		if raw := d.data[start:d.pos]; len(raw) > 15 || exp {
			if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
				return nil, &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("number at offset %d is out of range", start)}
			}
		}
		return nil, nil
	}
	text := d.src[start:d.pos]
	if !frac && !exp {
		// An integer of up to 15 digits is exact in a float64 (< 2^53), so
		// it needs no strconv: ParseFloat would return the same value.
		ds, neg := strings.CutPrefix(text, "-")
		if len(ds) <= 15 {
			n := 0
			for i := 0; i < len(ds); i++ {
				n = n*10 + int(ds[i]-'0')
			}
			if !neg && n < len(smallInts) {
				return smallInts[n], nil // pre-boxed: no allocation
			}
			f := float64(n)
			if neg {
				f = -f // "-0" stays negative zero, as ParseFloat gives it
			}
			return d.mem.boxFloat(f), nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("number at offset %d is out of range", start)}
	}
	return d.mem.boxFloat(f), nil
}

// rawStr validates a string without building it.
func (d *decoder) rawStr() (string, error) {
	saved := d.discard
	d.discard = true
	_, err := d.str()
	d.discard = saved
	return "", err
}

func (d *decoder) str() (string, error) {
	if d.peek() != '"' {
		return "", d.fail("expected a string")
	}
	d.pos++
	start := d.pos
	// fast path: no escapes; ASCII-only strings (the common case) need no
	// separate UTF-8 pass
	// A byte loop first, inline: most keys and values end within a few
	// bytes, where it beats a word scan (a call and a ~10-cycle dependency
	// chain per word); only a string longer than shortStr goes on by words.
	data, i := d.data, start
	var hi byte
	for end := min(i+shortStr, len(data)); i < end && !strStop[data[i]]; i++ {
		hi |= data[i]
	}
	high := hi >= utf8.RuneSelf
	if i-start == shortStr {
		var h bool
		i, h = strStopAt(data, i)
		high = high || h
	}
	if i < len(data) {
		switch c := data[i]; {
		case c == '"':
			d.pos = i
			if high && !utf8.Valid(data[start:i]) {
				return "", d.fail("string is not valid UTF-8")
			}
			d.pos = i + 1
			if d.discard {
				return "", nil
			}
			return d.src[start:i], nil
		case c < 0x20:
			d.pos = i
			return "", d.fail("control character in string")
		}
	}
	d.pos = i // at a backslash, or the input ended
	// The prefix is kept even when discarding: the UTF-8 check at the end
	// must see it, or ValidateField would accept what DecodeField rejects.
	buf := append([]byte(nil), d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			if !utf8.Valid(buf) {
				return "", d.fail("string is not valid UTF-8")
			}
			if d.discard {
				return "", nil
			}
			return string(buf), nil
		case c < 0x20:
			return "", d.fail("control character in string")
		case c != '\\':
			buf = append(buf, c) // escaped strings are rare: build them even when discarding
			d.pos++
			continue
		}
		d.pos++
		switch d.peek() {
		case '"', '\\', '/':
			buf = append(buf, d.data[d.pos])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := jsonlex.Hex4(d.data, d.pos+1)
			if !ok {
				return "", d.fail("invalid \\u escape")
			}
			d.pos += 4
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(0), false
				if d.pos+2 < len(d.data) && d.data[d.pos+1] == '\\' && d.data[d.pos+2] == 'u' {
					r2, ok2 = jsonlex.Hex4(d.data, d.pos+3)
				}
				if ok2 {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						d.pos += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", d.fail("invalid escape in string")
		}
		d.pos++
	}
	return "", d.fail("unterminated string")
}

// objectInto decodes an object into m, or into top's top level when top is
// not nil (neither while discarding).
func (d *decoder) objectInto(m map[string]any, top *Context, depth int) error {
	if depth > d.lim.MaxDepth {
		return &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("context nests deeper than %d levels", d.lim.MaxDepth)}
	}
	d.pos++ // '{'
	d.skipSpace()
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		d.skipSpace()
		key, err := d.str()
		if err != nil {
			return err
		}
		d.keys++
		if d.keys > d.lim.MaxKeys {
			return &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("context has more than %d keys", d.lim.MaxKeys)}
		}
		d.skipSpace()
		if d.peek() != ':' {
			return d.fail("expected ':' after object key")
		}
		d.pos++
		v, err := d.value(depth + 1)
		if err != nil {
			return err
		}
		if top != nil {
			top.set(key, v)
		} else if m != nil {
			m[key] = v
		}
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.fail("expected ',' or '}' in object")
		}
	}
}

func (d *decoder) array(depth int) (any, error) {
	d.pos++ // '['
	d.skipSpace()
	if d.peek() == ']' {
		d.pos++
		if d.discard {
			return nil, nil
		}
		return []any{}, nil
	}
	base := len(d.mem.stack)
	for {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if !d.discard {
			d.mem.stack = append(d.mem.stack, v)
		}
		d.keys++
		if d.keys > d.lim.MaxKeys {
			return nil, &ContextError{Code: CodeInvalidContext, Detail: fmt.Sprintf("context has more than %d keys and elements", d.lim.MaxKeys)}
		}
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			if d.discard {
				return nil, nil
			}
			out := d.mem.array(d.mem.stack[base:])
			d.mem.stack = d.mem.stack[:base]
			return out, nil
		default:
			return nil, d.fail("expected ',' or ']' in array")
		}
	}
}

// shortStr is how many bytes of a string str scans one at a time before
// strStopAt takes over by words.
const shortStr = 16

// Byte-lane constants for strStopAt: every byte 0x01, every byte 0x80.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
)

// strStopAt returns the index of the first byte at or after i in data that
// ends a string's fast path (the closing quote, a backslash or a control
// character), or len(data), and whether a byte before it is not ASCII.
//
// It reads 8 bytes at a time (SWAR): for a word w, (x-lanes01)&^x&lanes80
// flags the bytes of x that are zero, so x = w^('"'*lanes01) finds quotes
// and w^('\\'*lanes01) backslashes, and (w-0x20*lanes01)&^w&lanes80 flags
// bytes below 0x20. A flag above a flagged byte can be false (the
// subtraction's borrow), but the lowest flag is always exact, which is all
// the scan needs. Bytes with the high bit set are never flagged (&^w); they
// are collected in acc for the UTF-8 check. str calls it only past the
// first shortStr bytes: for the short keys and values of a typical
// context a byte loop was faster (BenchmarkDecodeContext200B took 1.2 ×
// as long with words for every string), for long ones words are
// (BenchmarkDecodeContextLongStrings).
func strStopAt(data []byte, i int) (int, bool) {
	var acc uint64
	for ; len(data)-i >= 8; i += 8 {
		w := byteorder.LittleEndian.Uint64(data[i:])
		q, b := w^('"'*lanes01), w^('\\'*lanes01)
		stop := ((q - lanes01) &^ q) | ((b - lanes01) &^ b) | ((w - 0x20*lanes01) &^ w)
		if stop &= lanes80; stop != 0 {
			n := bits.TrailingZeros64(stop) / 8 // bytes before the stop
			acc |= w & (1<<(8*n) - 1)
			return i + n, acc&lanes80 != 0
		}
		acc |= w
	}
	high := acc&lanes80 != 0
	for ; i < len(data); i++ {
		c := data[i]
		if strStop[c] {
			break
		}
		high = high || c >= utf8.RuneSelf
	}
	return i, high
}

// strStop marks the bytes that end a string's fast path: the closing
// quote, a backslash and control characters; one table load instead of
// three comparisons per byte (for the tail shorter than a word).
var strStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// smallInts are boxed float64s for 0..255, the most common numbers in
// contexts (ages, counts, flags as 0/1), so decoding them does not allocate.
var smallInts = func() [256]any {
	var out [256]any
	for i := range out {
		out[i] = float64(i)
	}
	return out
}()

// emptyObject0 stands for any object while discarding: callers only need to
// know it was an object.
var emptyObject0 any = map[string]any(nil)
