package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/pennon-dev/pennon/internal/jsonlex"
)

// jsonReader is the single-pass decoder behind Parse's fast path. It reads
// JSON into the same values encoding/json produces with UseNumber
// (map[string]any, []any, string, json.Number, bool, nil) and checks, in
// the same pass, what Parse would otherwise find in separate scans:
// duplicate keys and syntax.
//
// It only ever says yes or "not me": on anything unusual (a syntax error, a
// repeated key, invalid UTF-8, a lone surrogate escape, deep nesting) it
// returns errSlowPath and Parse reads the input with encoding/json as it
// always did, so every error message, and every odd input's meaning, stays
// exactly what it was. encoding/json decoded each flag three or four times
// (document, flags object, definition, rules) and spent most of a 100,000
// flag start-up doing it; this reads every byte once.
type jsonReader struct {
	data   []byte
	pos    int
	depth  int
	intern *internTable // nil: every string is its own allocation
}

// internTable gives repeated short strings and numbers one allocation. A
// flag set repeats the same few words thousands of times ("var", "if",
// "email", "on", "off", 50); without it, each copy was a separate string
// and interface box, most of them kept by the compiled rules — three
// quarters of a million small objects at 100,000 flags, scattered between
// the garbage of decoding, which kept hundreds of megabytes of heap spans
// in use. The table is per parsing goroutine and bounded.
type internTable struct {
	strs map[string]any // the boxed value; its string is the shared one
	nums map[string]any
}

// Bounds: only short values repeat, and a table never grows past maxInterned
// entries (a document of unique strings gains nothing from it).
const (
	maxInternLen = 32
	maxInterned  = 1 << 14
)

// lookup returns the boxed value for b from table *m, making it with mk.
func (t *internTable) lookup(m *map[string]any, b []byte, mk func(string) any) any {
	if len(b) > maxInternLen {
		return mk(string(b))
	}
	if v, ok := (*m)[string(b)]; ok { // no allocation: the compiler reads b in place
		return v
	}
	v := mk(string(b))
	if *m == nil {
		*m = make(map[string]any)
	}
	if len(*m) < maxInterned {
		(*m)[string(b)] = v
	}
	return v
}

func boxString(s string) any { return s }
func boxNumber(s string) any { return json.Number(s) }

// errSlowPath means "let encoding/json read this": never shown to a user.
var errSlowPath = errors.New("config: input needs the exact (encoding/json) path")

// maxFastDepth bounds recursion; deeper (legal) JSON takes the slow path.
const maxFastDepth = 200

func (r *jsonReader) space() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// value reads any JSON value.
func (r *jsonReader) value() (any, error) {
	r.space()
	if r.pos >= len(r.data) {
		return nil, errSlowPath
	}
	switch c := r.data[r.pos]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		if r.intern != nil {
			return r.internedStr()
		}
		return r.str()
	case c == 't':
		return true, r.word("true")
	case c == 'f':
		return false, r.word("false")
	case c == 'n':
		return nil, r.word("null")
	case c == '-' || c >= '0' && c <= '9':
		return r.number()
	}
	return nil, errSlowPath
}

func (r *jsonReader) word(w string) error {
	if len(r.data)-r.pos < len(w) || string(r.data[r.pos:r.pos+len(w)]) != w {
		return errSlowPath
	}
	r.pos += len(w)
	return nil
}

// number reads a number as written (json.Number).
func (r *jsonReader) number() (any, error) {
	start := r.pos
	if err := r.scanNumber(); err != nil {
		return nil, err
	}
	if r.intern != nil {
		return r.intern.lookup(&r.intern.nums, r.data[start:r.pos], boxNumber), nil
	}
	return json.Number(r.data[start:r.pos]), nil
}

// internedStr is str through the intern table, boxed. A string with
// escapes is decoded first and interned by its decoded text.
func (r *jsonReader) internedStr() (any, error) {
	start := r.pos
	if err := r.skipString(); err != nil {
		return nil, err
	}
	raw := r.data[start+1 : r.pos-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		end := r.pos
		r.pos = start
		s, err := r.str()
		if err != nil {
			return nil, err
		}
		r.pos = end
		return r.intern.lookup(&r.intern.strs, []byte(s), boxString), nil
	}
	return r.intern.lookup(&r.intern.strs, raw, boxString), nil
}

// scanNumber passes over a number, checking JSON's grammar.
func (r *jsonReader) scanNumber() error {
	d := r.data
	i := r.pos
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return errSlowPath
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return errSlowPath
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return errSlowPath
		}
	}
	r.pos = i
	return nil
}

// str reads a string. Strings without escapes (nearly all) are one copy.
func (r *jsonReader) str() (string, error) {
	r.pos++ // '"'
	d := r.data
	start := r.pos
	ascii := true
	for i := start; i < len(d); i++ {
		c := d[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(d[start:i]) {
				return "", errSlowPath // encoding/json substitutes U+FFFD
			}
			r.pos = i + 1
			return string(d[start:i]), nil
		case c == '\\':
			r.pos = i
			return r.escaped(start)
		case c < 0x20:
			return "", errSlowPath
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", errSlowPath
}

// escaped finishes a string with escapes; r.pos is at the first '\'.
func (r *jsonReader) escaped(start int) (string, error) {
	d := r.data
	buf := make([]byte, 0, r.pos-start+16)
	buf = append(buf, d[start:r.pos]...)
	for r.pos < len(d) {
		c := d[r.pos]
		switch {
		case c == '"':
			r.pos++
			if !utf8.Valid(buf) {
				return "", errSlowPath
			}
			return string(buf), nil
		case c < 0x20:
			return "", errSlowPath
		case c != '\\':
			buf = append(buf, c)
			r.pos++
			continue
		}
		if r.pos+1 >= len(d) {
			return "", errSlowPath
		}
		r.pos++
		switch e := d[r.pos]; e {
		case '"', '\\', '/':
			buf = append(buf, e)
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
			ch, ok := jsonlex.Hex4(d, r.pos+1)
			if !ok {
				return "", errSlowPath
			}
			r.pos += 4
			if utf16.IsSurrogate(ch) {
				// Only a well-formed pair is taken here; encoding/json's
				// handling of lone halves is left to encoding/json.
				if r.pos+6 >= len(d) || d[r.pos+1] != '\\' || d[r.pos+2] != 'u' {
					return "", errSlowPath
				}
				lo, ok := jsonlex.Hex4(d, r.pos+3)
				if !ok {
					return "", errSlowPath
				}
				ch = utf16.DecodeRune(ch, lo)
				if ch == utf8.RuneError {
					return "", errSlowPath
				}
				r.pos += 6
			}
			buf = utf8.AppendRune(buf, ch)
		default:
			return "", errSlowPath
		}
		r.pos++
	}
	return "", errSlowPath
}

// key reads an object key and the ':' after it.
func (r *jsonReader) key() (string, error) {
	r.space()
	if r.pos >= len(r.data) || r.data[r.pos] != '"' {
		return "", errSlowPath
	}
	var k string
	var err error
	if r.intern != nil {
		var v any
		v, err = r.internedStr()
		k, _ = v.(string)
	} else {
		k, err = r.str()
	}
	if err != nil {
		return "", err
	}
	r.space()
	if r.pos >= len(r.data) || r.data[r.pos] != ':' {
		return "", errSlowPath
	}
	r.pos++
	return k, nil
}

// next consumes the ',' between members or elements, or the closing
// bracket; done reports the latter.
func (r *jsonReader) next(closing byte) (done bool, err error) {
	r.space()
	if r.pos >= len(r.data) {
		return false, errSlowPath
	}
	switch r.data[r.pos] {
	case ',':
		r.pos++
		return false, nil
	case closing:
		r.pos++
		return true, nil
	}
	return false, errSlowPath
}

// open consumes an opening bracket and reports whether the container is
// empty (its closing bracket consumed too).
func (r *jsonReader) open(closing byte) (empty bool, err error) {
	r.depth++
	if r.depth > maxFastDepth {
		return false, errSlowPath
	}
	r.pos++
	r.space()
	if r.pos < len(r.data) && r.data[r.pos] == closing {
		r.pos++
		r.depth--
		return true, nil
	}
	return false, nil
}

func (r *jsonReader) object() (any, error) {
	m := map[string]any{}
	err := r.members(func(k string, r *jsonReader) error {
		if _, dup := m[k]; dup {
			return errSlowPath // reported, with its path, by the exact path
		}
		v, err := r.value()
		m[k] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (r *jsonReader) array() (any, error) {
	a := []any{}
	err := r.elements(func(r *jsonReader) error {
		v, err := r.value()
		a = append(a, v)
		return err
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// elements walks the array at r.pos (its '['), calling each with r at an
// element; each must consume it.
func (r *jsonReader) elements(each func(r *jsonReader) error) error {
	empty, err := r.open(']')
	if err != nil || empty {
		return err
	}
	for {
		if err := each(r); err != nil {
			return err
		}
		done, err := r.next(']')
		if err != nil {
			return err
		}
		if done {
			r.depth--
			return nil
		}
	}
}

// skip passes over one value without building it and returns its bytes,
// checking syntax and UTF-8 but allocating nothing (repeated keys inside
// are found when the value is decoded).
func (r *jsonReader) skip() ([]byte, error) {
	r.space()
	start := r.pos
	if r.pos >= len(r.data) {
		return nil, errSlowPath
	}
	var err error
	switch c := r.data[r.pos]; {
	case c == '[':
		err = r.elements(func(r *jsonReader) error { _, err := r.skip(); return err })
	case c == '{':
		err = r.skipMembers()
	case c == '"':
		err = r.skipString()
	case c == '-' || c >= '0' && c <= '9':
		err = r.scanNumber()
	default:
		_, err = r.value() // true, false, null or not JSON: no allocation
	}
	if err != nil {
		return nil, err
	}
	return r.data[start:r.pos], nil
}

// skipMembers passes over the object at r.pos as members does, checking
// keys without building them.
func (r *jsonReader) skipMembers() error {
	empty, err := r.open('}')
	if err != nil || empty {
		return err
	}
	for {
		r.space()
		if err := r.skipString(); err != nil {
			return err
		}
		r.space()
		if r.pos >= len(r.data) || r.data[r.pos] != ':' {
			return errSlowPath
		}
		r.pos++
		if _, err := r.skip(); err != nil {
			return err
		}
		done, err := r.next('}')
		if err != nil {
			return err
		}
		if done {
			r.depth--
			return nil
		}
	}
}

// skipString passes over a string, checking it as str does; only a string
// with escapes (rare) is decoded to check them.
func (r *jsonReader) skipString() error {
	if r.pos >= len(r.data) || r.data[r.pos] != '"' {
		return errSlowPath
	}
	d := r.data
	start := r.pos + 1
	ascii := true
	for i := start; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(d[start:i]) {
				return errSlowPath
			}
			r.pos = i + 1
			return nil
		case c == '\\':
			_, err := r.str()
			return err
		case c < 0x20:
			return errSlowPath
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return errSlowPath
}

// members walks the object at r.pos, calling each with a member's key while
// r is at its value; each must consume the value. It does not look for
// repeated keys: each caller does, in the way that is cheapest for it.
func (r *jsonReader) members(each func(key string, r *jsonReader) error) error {
	r.space()
	if r.pos >= len(r.data) || r.data[r.pos] != '{' {
		return errSlowPath
	}
	empty, err := r.open('}')
	if err != nil || empty {
		return err
	}
	for {
		k, err := r.key()
		if err != nil {
			return err
		}
		if err := each(k, r); err != nil {
			return err
		}
		done, err := r.next('}')
		if err != nil {
			return err
		}
		if done {
			r.depth--
			return nil
		}
	}
}

// end checks that only whitespace follows the value read.
func (r *jsonReader) end() error {
	r.space()
	if r.pos != len(r.data) {
		return errSlowPath
	}
	return nil
}
