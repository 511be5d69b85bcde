package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSidecarGCPercent(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantPct int
		wantSet bool
	}{
		{"unset: the sidecar's default", nil, sidecarGOGC, true},
		{"empty counts as unset", map[string]string{"GOGC": ""}, sidecarGOGC, true},
		{"operator's value wins", map[string]string{"GOGC": "100"}, 0, false},
		{"operator's off wins", map[string]string{"GOGC": "off"}, 0, false},
		{"GOMEMLIMIT alone keeps the default GOGC", map[string]string{"GOMEMLIMIT": "64MiB"}, sidecarGOGC, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			for _, want := range []int{sidecarGOGC, sidecarStartupGOGC} {
				wantPct := tc.wantPct
				if tc.wantSet {
					wantPct = want
				}
				pct, set := sidecarGCPercent(lookup, want)
				if pct != wantPct || set != tc.wantSet {
					t.Fatalf("sidecarGCPercent(%d) = %d, %v; want %d, %v", want, pct, set, wantPct, tc.wantSet)
				}
			}
		})
	}
}

// smapsEntry renders one /proc/PID/smaps mapping; anon < 0 leaves the
// Anonymous line out (as a kernel without it would).
func smapsEntry(rng, perms, inode, path string, rssKB, anonKB int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s 00000000 fd:01 %s          %s\n", rng, perms, inode, path)
	fmt.Fprintf(&b, "Size:              17452 kB\nKernelPageSize:        4 kB\nRss:            %8d kB\nPss:            %8d kB\n", rssKB, rssKB)
	if anonKB >= 0 {
		fmt.Fprintf(&b, "Anonymous:      %8d kB\n", anonKB)
	}
	b.WriteString("THPeligible:    0\nVmFlags: rd ex mr mw me sd \n")
	return b.String()
}

func TestReleasableRanges(t *testing.T) {
	const exe, ino = "/usr/local/bin/pennon", "4242"
	tests := []struct {
		name  string
		smaps string
		want  []pageRange
	}{
		{"text and rodata of the executable", smapsEntry("00400000-0148b000", "r-xp", ino, exe, 10724, 0) +
			smapsEntry("0148b000-0255e000", "r--p", ino, exe, 10372, 0),
			[]pageRange{{0x400000, 0x148b000, 10724 << 10}, {0x148b000, 0x255e000, 10372 << 10}}},
		{"writable data is never released", smapsEntry("0255e000-0266c000", "rw-p", ino, exe, 740, 700), nil},
		{"read-only pages written privately (relocations) are kept", smapsEntry("0148b000-0255e000", "r--p", ino, exe, 10372, 12), nil},
		{"no Anonymous line: not known to be clean, kept", smapsEntry("00400000-0148b000", "r-xp", ino, exe, 10724, -1), nil},
		{"another file", smapsEntry("7f7736000000-7f77361a4000", "r-xp", "99", "/usr/lib/x86_64-linux-gnu/libc.so.6", 960, 0), nil},
		{"same path, other inode (replaced on disk)", smapsEntry("00400000-0148b000", "r-xp", "4243", exe, 10724, 0), nil},
		{"nothing resident", smapsEntry("00400000-0148b000", "r-xp", ino, exe, 0, 0), nil},
		{"anonymous mapping between", smapsEntry("00400000-0148b000", "r-xp", ino, exe, 8, 0) +
			"2a6312000000-2a6313c00000 rw-p 00000000 00:00 0 \nRss:               19956 kB\nAnonymous:         19956 kB\n" +
			smapsEntry("0148b000-0255e000", "r--p", ino, exe, 4, 0),
			[]pageRange{{0x400000, 0x148b000, 8 << 10}, {0x148b000, 0x255e000, 4 << 10}}},
		{"a deleted executable keeps its suffix in both places", smapsEntry("00400000-0148b000", "r-xp", ino, exe+" (deleted)", 4, 0), nil},
		{"malformed header is skipped", "zz-00 r-xp 0 fd:01 4242 " + exe + "\nRss: 4 kB\nAnonymous: 0 kB\n", nil},
		{"empty", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := releasableRanges(strings.NewReader(tc.smaps), exe, 4242)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// The deleted executable matches when /proc/self/exe says so too.
	got, _ := releasableRanges(strings.NewReader(smapsEntry("00400000-0148b000", "r-xp", ino, exe+" (deleted)", 4, 0)), exe+" (deleted)", 4242)
	if len(got) != 1 {
		t.Fatalf("deleted executable: got %v, want one range", got)
	}
}

func FuzzReleasableRanges(f *testing.F) {
	f.Add(smapsEntry("00400000-0148b000", "r-xp", "1", "/x", 8, 0))
	f.Add("0-1 r-xp 0 0:0 1 /x\nRss: 4 kB\nAnonymous: 0 kB\n")
	f.Add("ffffffffffffffff-0 ---- 0 0:0 1 /x\nRss: -4 kB\nAnonymous: x kB\n:\n")
	f.Fuzz(func(t *testing.T, smaps string) {
		got, _ := releasableRanges(strings.NewReader(smaps), "/x", 1)
		for _, r := range got {
			if r.end <= r.start || r.rss <= 0 {
				t.Fatalf("released range %+v from %q", r, smaps)
			}
		}
	})
}

// rssFileKB reads this process's file-backed resident set (Linux only).
func rssFileKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		var kb int
		if n, _ := fmt.Sscanf(line, "RssFile: %d kB", &kb); n == 1 {
			return kb
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseExecutablePages drops this test binary's read-only pages and
// keeps running: the code it runs next is mapped again from the page cache.
func TestReleaseExecutablePages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	before := rssFileKB(t)
	released, err := releaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if released <= 0 || after >= before {
		t.Fatalf("released %d bytes; RssFile %d kB before, %d kB after: want fewer resident pages", released, before, after)
	}
	// Code and read-only data are intact: a function run for the first
	// time since, with a string constant and a table lookup.
	if got := mib(3 << 20); got != "3.0 MiB" {
		t.Fatalf("after releasing: mib = %q", got)
	}
}

// lockedBuffer is a bytes.Buffer that zap's goroutines and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSidecarReleasesStartupMemory: `pennon sidecar` gives back start-up
// memory once listening and says so once, with the GC target it set.
func TestSidecarReleasesStartupMemory(t *testing.T) {
	t.Setenv("GOGC", "")
	prev := debug.SetGCPercent(100) // the sidecar sets it for the whole test process
	debug.SetGCPercent(prev)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runSidecar(ctx, []string{"--file", "../../examples/checkout.json", "--addr", "127.0.0.1:0",
			"--grpc-addr", "", "--sync-addr", ""}, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "start-up memory released") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no start-up memory line within 20s; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	if n := strings.Count(out, "start-up memory released"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, `"gc":"GOGC=25"`) {
		t.Fatalf("the log does not name the GC target GOGC=25:\n%s", out)
	}
	if runtime.GOOS == "linux" && strings.Contains(out, `"executable_bytes":0`) {
		t.Fatalf("no executable pages released on Linux:\n%s", out)
	}
}
