package main

import (
	"fmt"
	"os"
	"syscall"
)

// releaseExecutablePages drops this process's mappings of the executable's
// read-only pages (releasableRanges says which) with MADV_DONTNEED and
// returns how many resident bytes they held. The pages stay in the page
// cache: a page used again is mapped again by a minor fault, with the same
// content, since read-only private file pages are the file's bytes.
func releaseExecutablePages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("executable path: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("executable inode: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	ranges, err := releasableRanges(f, exe, st.Ino)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("/proc/self/smaps: %w", err)
	}
	var released int64
	for _, r := range ranges {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(r.start), uintptr(r.end-r.start), syscall.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %x-%x: %w", r.start, r.end, errno)
		}
		released += r.rss
	}
	return released, nil
}
