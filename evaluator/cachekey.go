package evaluator

// AppendValues appends to dst an unambiguous, type-tagged encoding of the
// context's values at paths (read exactly as compiled var paths read them),
// in the order given. Callers that cache an answer depending on several
// flags key it with the union of their Reads: two contexts with equal
// encodings give every one of those flags the same answer, as
// Flag.AppendCacheKey argues for one flag.
func (c *Context) AppendValues(dst []byte, paths []string) []byte {
	for _, p := range paths {
		dst = append(dst, p...)
		dst = append(dst, 0)
		dst = appendKeyValue(dst, c.lookupPath(p))
		dst = append(dst, 0)
	}
	return dst
}
