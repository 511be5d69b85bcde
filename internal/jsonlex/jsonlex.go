// Package jsonlex holds the lexing pieces shared by pennon's two
// hand-written JSON readers: the evaluator's context decoder and config's
// document reader. Each reader keeps its own loop (they build different
// values and treat odd input differently); what is the same is here once.
package jsonlex

// Hex4 reads the four hex digits of a \u escape at d[at:at+4]; ok is false
// if there are fewer than four or one is not a hex digit.
func Hex4(d []byte, at int) (r rune, ok bool) {
	if at < 0 || at+4 > len(d) {
		return 0, false
	}
	for _, c := range d[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}
