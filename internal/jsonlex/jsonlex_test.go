package jsonlex

import (
	"strconv"
	"testing"
)

func TestHex4(t *testing.T) {
	for _, c := range []struct {
		in   string
		at   int
		want rune
		ok   bool
	}{
		{"00e9", 0, 0xe9, true},
		{"\\uD83D", 2, 0xd83d, true},
		{"FFFF", 0, 0xffff, true},
		{"abcd", 0, 0xabcd, true},
		{"12g4", 0, 0, false},
		{"123", 0, 0, false},
		{"1234", 1, 0, false},
		{"1234", -1, 0, false},
	} {
		r, ok := Hex4([]byte(c.in), c.at)
		if r != c.want || ok != c.ok {
			t.Errorf("Hex4(%q, %d) = %#x, %v; want %#x, %v", c.in, c.at, r, ok, c.want, c.ok)
		}
	}
	// Every 16-bit value round-trips through its lower- and upper-case hex.
	for v := 0; v < 1<<16; v += 97 {
		for _, s := range []string{strconv.FormatInt(int64(v|1<<16), 16)[1:], "0000"} {
			if s == "0000" && v != 0 {
				continue
			}
			if r, ok := Hex4([]byte(s), 0); !ok || r != rune(v) {
				t.Fatalf("Hex4(%q) = %#x, %v; want %#x", s, r, ok, v)
			}
		}
	}
}
