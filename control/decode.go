package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Request envelopes are decoded strictly, like flag documents. Go's
// encoding/json is lenient in three ways that matter for an audited admin
// API: it keeps the last of two equal keys, it matches field names
// case-insensitively (`{"Emergency":true}` sets Emergency), and Decoder.Decode
// ignores whatever follows the first value. Each would let a body mean
// something other than what a reviewer reading it sees, so each is a 400
// naming the field.

// decodeBody decodes a JSON body into v (a pointer to a struct) strictly:
// unknown fields, duplicate keys, field names that differ only in case from
// a known one, and data after the JSON value are all errors.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return newErr(CodeUnsupportedMedia, "content type %q: send application/json", ct)
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return newErr(CodeBadRequest, "request body: %v", err)
	}
	return decodeStrict(data, v)
}

// decodeStrict is decodeBody without the HTTP parts.
func decodeStrict(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return newErr(CodeBadRequest, "request body is empty; send a JSON object")
	}
	if trimmed[0] != '{' {
		// null, arrays and scalars decode into a struct as "nothing set" or
		// a type error; neither is what the caller meant.
		return newErr(CodeBadRequest, "request body must be a JSON object ({…})")
	}
	if err := checkEnvelope(data, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return fieldErr(CodeBadRequest, ute.Field, "request body: field %q: a JSON %s cannot be a %s", ute.Field, ute.Value, ute.Type)
		}
		return newErr(CodeBadRequest, "request body: %v", err)
	}
	return nil
}

// checkEnvelope walks the JSON once with the shape of t, before decoding.
func checkEnvelope(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := envelopeWalker{dec: dec}
	if err := w.value(t, "", 0); err != nil {
		return err
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return newErr(CodeBadRequest, "request body: unexpected data after the JSON value (at byte %d): send exactly one JSON object", end)
	}
	return nil
}

// maxDepth bounds nesting: no envelope is deeper than a few levels, and a
// 1 MiB body of brackets must not cost a deep recursion.
const maxDepth = 64

type envelopeWalker struct {
	dec *json.Decoder
}

func (w *envelopeWalker) syntax(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return newErr(CodeBadRequest, "request body: invalid JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return newErr(CodeBadRequest, "request body: the JSON value is incomplete")
	}
	return newErr(CodeBadRequest, "request body: %v", err)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func where(path string) string {
	if path == "" {
		return "the top level"
	}
	return strconv.Quote(path)
}

// value consumes one JSON value; t is the Go type it will decode into (nil:
// unknown or free-form, only duplicates are checked).
func (w *envelopeWalker) value(t reflect.Type, path string, depth int) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := w.dec.Token()
	if err != nil {
		return w.syntax(err)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil // scalar: type mismatches are reported by the decoder
	}
	if depth >= maxDepth {
		return newErr(CodeBadRequest, "request body: nested deeper than %d levels at %s", maxDepth, where(path))
	}
	if t == rawMessageType {
		t = nil // a flag definition: free-form here (config validates it), duplicates still refused
	}
	switch delim {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, path+"["+strconv.Itoa(i)+"]", depth+1); err != nil {
				return err
			}
		}
	case '{':
		var fields *structFields
		var elem reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct:
			fields = fieldsOf(t)
		case t != nil && t.Kind() == reflect.Map:
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for w.dec.More() {
			kt, err := w.dec.Token()
			if err != nil {
				return w.syntax(err)
			}
			key, _ := kt.(string)
			if seen[key] {
				return fieldErr(CodeBadRequest, join(path, key), "request body: duplicate key %q at %s: send each field once (JSON decoders disagree on which copy wins)", key, where(path))
			}
			seen[key] = true
			ft := elem
			if fields != nil {
				f, exact := fields.byName[key]
				if !exact {
					if known, ok := fields.byFold[strings.ToLower(key)]; ok {
						return fieldErr(CodeBadRequest, join(path, key), "request body: field %q at %s: did you mean %q? field names are case-sensitive", key, where(path), known)
					}
					return fieldErr(CodeBadRequest, join(path, key), "request body: unknown field %q at %s (allowed: %s)", key, where(path), strings.Join(fields.names, ", "))
				}
				ft = f
			}
			if err := w.value(ft, join(path, key), depth+1); err != nil {
				return err
			}
		}
	}
	if _, err := w.dec.Token(); err != nil { // the closing delimiter
		return w.syntax(err)
	}
	return nil
}

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// structFields is the JSON view of a struct type: exact names, names folded
// to lower case (to catch case variants), and the sorted list for messages.
type structFields struct {
	byName map[string]reflect.Type
	byFold map[string]string
	names  []string
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if c, ok := fieldCache.Load(t); ok {
		return c.(*structFields)
	}
	sf := &structFields{byName: map[string]reflect.Type{}, byFold: map[string]string{}}
	collectFields(t, sf, 0)
	for n := range sf.byName {
		sf.names = append(sf.names, n)
	}
	sort.Strings(sf.names)
	fieldCache.Store(t, sf)
	return sf
}

func collectFields(t reflect.Type, sf *structFields, depth int) {
	if depth > 8 {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, sf, depth+1)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := sf.byName[name]; dup {
			continue
		}
		sf.byName[name] = ft
		sf.byFold[strings.ToLower(name)] = name
	}
}
