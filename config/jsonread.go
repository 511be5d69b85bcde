package config

import (
	"encoding/json"
	"errors"
	"unicode/utf16"
	"unicode/utf8"
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
	data  []byte
	pos   int
	depth int
}

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

// number reads a number as written (json.Number), checking JSON's grammar.
func (r *jsonReader) number() (any, error) {
	start := r.pos
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
		return nil, errSlowPath
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return nil, errSlowPath
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
			return nil, errSlowPath
		}
	}
	r.pos = i
	return json.Number(d[start:i]), nil
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
			ch, ok := hex4(d, r.pos+1)
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
				lo, ok := hex4(d, r.pos+3)
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

func hex4(d []byte, at int) (rune, bool) {
	if at+4 > len(d) {
		return 0, false
	}
	var ch rune
	for _, c := range d[at : at+4] {
		ch <<= 4
		switch {
		case c >= '0' && c <= '9':
			ch |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			ch |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			ch |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return ch, true
}

// key reads an object key and the ':' after it.
func (r *jsonReader) key() (string, error) {
	r.space()
	if r.pos >= len(r.data) || r.data[r.pos] != '"' {
		return "", errSlowPath
	}
	k, err := r.str()
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
	empty, err := r.open('}')
	if err != nil || empty {
		return m, err
	}
	for {
		k, err := r.key()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, errSlowPath // reported, with its path, by the exact path
		}
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		done, err := r.next('}')
		if err != nil {
			return nil, err
		}
		if done {
			r.depth--
			return m, nil
		}
	}
}

func (r *jsonReader) array() (any, error) {
	a := []any{}
	empty, err := r.open(']')
	if err != nil || empty {
		return a, err
	}
	for {
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		done, err := r.next(']')
		if err != nil {
			return nil, err
		}
		if done {
			r.depth--
			return a, nil
		}
	}
}

// skip passes over one value without building it and returns its bytes,
// still checking syntax, UTF-8 and (in objects) repeated keys.
func (r *jsonReader) skip() ([]byte, error) {
	r.space()
	start := r.pos
	if r.pos >= len(r.data) {
		return nil, errSlowPath
	}
	var err error
	switch c := r.data[r.pos]; {
	case c == '{':
		err = r.members(func(string, *jsonReader) error { _, err := r.skip(); return err })
	case c == '[':
		var empty bool
		if empty, err = r.open(']'); err == nil && !empty {
			for {
				if _, err = r.skip(); err != nil {
					break
				}
				var done bool
				if done, err = r.next(']'); err != nil || done {
					r.depth--
					break
				}
			}
		}
	default:
		_, err = r.value()
	}
	if err != nil {
		return nil, err
	}
	return r.data[start:r.pos], nil
}

// members walks the object at r.pos, calling each with a member's key while
// r is at its value; each must consume the value. Repeated keys are
// errSlowPath.
func (r *jsonReader) members(each func(key string, r *jsonReader) error) error {
	r.space()
	if r.pos >= len(r.data) || r.data[r.pos] != '{' {
		return errSlowPath
	}
	empty, err := r.open('}')
	if err != nil || empty {
		return err
	}
	seen := map[string]struct{}{}
	for {
		k, err := r.key()
		if err != nil {
			return err
		}
		if _, dup := seen[k]; dup {
			return errSlowPath
		}
		seen[k] = struct{}{}
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
