//go:build !linux

package main

// releaseExecutablePages does nothing where /proc/self/smaps is missing.
func releaseExecutablePages() (int64, error) { return 0, nil }
