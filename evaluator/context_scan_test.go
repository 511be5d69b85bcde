package evaluator

import (
	"testing"
	"unicode/utf8"
)

// strStopAtBytewise is the byte-at-a-time scan strStopAt replaced, kept as
// its reference.
func strStopAtBytewise(data []byte, i int) (int, bool) {
	high := false
	for ; i < len(data); i++ {
		c := data[i]
		if c == '"' || c == '\\' || c < 0x20 {
			break
		}
		high = high || c >= utf8.RuneSelf
	}
	return i, high
}

// TestStrStopAt puts each stop byte at every position of two words, behind
// ASCII and non-ASCII prefixes, and next to bytes the SWAR subtraction
// borrows through (0x00 then 0x20, 0x21 after a quote, 0x5d after a
// backslash, 0x80 and 0xff).
func TestStrStopAt(t *testing.T) {
	fills := []byte{'a', ' ', '!', '#', '[', ']', 0x7f, 0x80, 0xc3, 0xff}
	stops := []byte{'"', '\\', 0x00, 0x01, 0x1f, '\n'}
	after := []byte{0x00, 0x20, 0x21, '"', 0x5d, 0x80, 0xff}
	for _, fill := range fills {
		for _, stop := range stops {
			for _, next := range after {
				for pos := range 20 {
					data := make([]byte, 0, 24)
					for range pos {
						data = append(data, fill)
					}
					data = append(data, stop, next, 'x', 'y', 'z')
					for start := range min(pos+1, 9) {
						gotI, gotHigh := strStopAt(data, start)
						wantI, wantHigh := strStopAtBytewise(data, start)
						if gotI != wantI || gotHigh != wantHigh {
							t.Fatalf("strStopAt(%q, %d) = %d, %v; want %d, %v", data, start, gotI, gotHigh, wantI, wantHigh)
						}
					}
				}
			}
		}
	}
	for _, tc := range []struct {
		data  string
		i     int
		high  bool
		start int
	}{
		{"", 0, false, 0},
		{"abcdefghijklmnop", 16, false, 0},
		{"abcdefghijklmnopq", 17, false, 3},
		{"abcdefg\xe9", 8, true, 0},
		{"abcdefgh\xe9\"", 9, true, 0},
		{"\xe9abcdefg\"", 8, true, 0},
		{"abcdefg\"\xe9", 7, false, 0}, // a non-ASCII byte after the stop does not count
		{"abcdefghijklmn\"\xe9", 14, false, 2},
	} {
		if i, high := strStopAt([]byte(tc.data), tc.start); i != tc.i || high != tc.high {
			t.Errorf("strStopAt(%q, %d) = %d, %v; want %d, %v", tc.data, tc.start, i, high, tc.i, tc.high)
		}
	}
}

// FuzzStrStopAt checks the word-at-a-time scan against the byte loop on
// any input and start offset.
func FuzzStrStopAt(f *testing.F) {
	for _, s := range []string{"", "abc\"", "0123456789abcdef\\", "\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\x00", "        !\"", "\x00 \x20"} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, start uint8) {
		i := int(start) % (len(data) + 1)
		gotI, gotHigh := strStopAt(data, i)
		wantI, wantHigh := strStopAtBytewise(data, i)
		if gotI != wantI || gotHigh != wantHigh {
			t.Fatalf("strStopAt(%q, %d) = %d, %v; want %d, %v", data, i, gotI, gotHigh, wantI, wantHigh)
		}
	})
}
