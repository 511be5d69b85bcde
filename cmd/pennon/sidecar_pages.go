package main

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// pageRange is one mapping of the executable that may be released.
type pageRange struct {
	start, end uint64 // [start, end) virtual addresses
	rss        int64  // resident bytes before releasing
}

// releasableRanges reads /proc/self/smaps text and returns the mappings of
// the file exe (its path as /proc/self/exe reads, and its inode) that can be
// dropped from this process and refilled from the file on the next access:
// read-only ones (no 'w' in the permissions) with no anonymous pages, i.e.
// nothing written to them privately (a relocated read-only segment of a
// position-independent build has such pages, and dropping them would undo
// the relocations). Anything it cannot parse is left out, never guessed.
func releasableRanges(smaps io.Reader, exe string, inode uint64) ([]pageRange, error) {
	var (
		out  []pageRange
		cur  pageRange
		ok   bool  // the current mapping is the executable's, read-only
		anon int64 // its Anonymous bytes; -1 until read
	)
	flush := func() {
		if ok && anon == 0 && cur.rss > 0 {
			out = append(out, cur)
		}
		ok = false
	}
	sc := bufio.NewScanner(smaps)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if key, val, isField := smapsField(line); isField {
			switch key {
			case "Rss":
				cur.rss = val
			case "Anonymous":
				anon = val
			}
			continue
		}
		// A mapping header: "start-end perms offset dev inode [path]".
		flush()
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		lo, hi, found := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		ino, err3 := strconv.ParseUint(f[4], 10, 64)
		path := strings.Join(f[5:], " ")
		if !found || err1 != nil || err2 != nil || err3 != nil || end <= start {
			continue
		}
		cur, anon = pageRange{start: start, end: end}, -1
		ok = ino == inode && path == exe && len(f[1]) == 4 && !strings.Contains(f[1], "w")
	}
	flush()
	return out, sc.Err()
}

// smapsField parses "Key:   123 kB" lines; isField is false for mapping
// headers (which start with a hex range) and for lines without a size.
func smapsField(line string) (key string, bytes int64, isField bool) {
	k, rest, found := strings.Cut(line, ":")
	if !found || strings.ContainsAny(k, " -") {
		return "", 0, false
	}
	f := strings.Fields(rest)
	if len(f) != 2 || f[1] != "kB" {
		return k, 0, true // a field, but not a size (e.g. VmFlags)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return k, 0, true
	}
	return k, n << 10, true
}
