package config

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/pennon-dev/pennon/evaluator"
)

// duplicateKeys reports every object key that appears twice in one JSON
// object of data, located by its path under prefix. encoding/json (and so
// flagd) silently keeps the last one, which in a flag file means a second
// definition of a flag quietly replaces the first; pennon refuses it.
// data must already be known to be valid JSON; on anything else the scan
// just stops (it never panics).
func duplicateKeys(data []byte, prefix string) []evaluator.Problem {
	s := dupScanner{data: data}
	s.value(prefix)
	return s.problems
}

type dupScanner struct {
	data     []byte
	i        int
	problems []evaluator.Problem
}

func (s *dupScanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

func (s *dupScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *dupScanner) value(path string) {
	s.space()
	switch s.peek() {
	case '{':
		s.object(path)
	case '[':
		s.array(path)
	case '"':
		s.str()
	default: // number, true, false, null
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// str skips a string and returns its raw bytes between the quotes.
func (s *dupScanner) str() []byte {
	if s.peek() != '"' {
		s.i = len(s.data)
		return nil
	}
	s.i++
	start := s.i
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			raw := s.data[start:s.i]
			s.i++
			return raw
		}
		s.i++
	}
	return nil
}

func (s *dupScanner) object(path string) {
	s.i++ // '{'
	var seen map[string]bool
	for s.i < len(s.data) {
		s.space()
		if s.peek() == '}' {
			s.i++
			return
		}
		key := keyString(s.str())
		s.space()
		if s.peek() != ':' {
			s.i = len(s.data)
			return
		}
		s.i++
		child := func() string {
			if path == "" {
				return key
			}
			return path + "." + key
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if seen[key] {
			s.problems = append(s.problems, evaluator.Problem{Path: child(),
				Reason: fmt.Sprintf("duplicate key %q: a JSON object must not repeat a key (the last one would silently win)", key)})
		}
		seen[key] = true
		s.space()
		if c := s.peek(); c == '{' || c == '[' {
			s.value(child())
		} else {
			s.value("")
		}
		s.space()
		if s.peek() == ',' {
			s.i++
		}
	}
}

func (s *dupScanner) array(path string) {
	s.i++ // '['
	for n := 0; s.i < len(s.data); n++ {
		start := s.i
		s.space()
		if s.peek() == ']' {
			s.i++
			return
		}
		if c := s.peek(); c == '{' || c == '[' {
			s.value(path + "[" + strconv.Itoa(n) + "]")
		} else {
			s.value("")
		}
		s.space()
		if s.peek() == ',' {
			s.i++
		}
		if s.i == start { // not JSON (e.g. "[}"): stop instead of spinning
			s.i = len(s.data)
		}
	}
}

// keyString decodes a raw key; escapes are rare, so only then is it unquoted
// through encoding/json (`"\u0061"` and `"a"` are the same key).
func keyString(raw []byte) string {
	for _, b := range raw {
		if b == '\\' {
			var k string
			if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &k) == nil {
				return k
			}
			break
		}
	}
	return string(raw)
}
