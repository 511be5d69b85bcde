package flagsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// flagsWith is a valid document whose flag f answers variant v.
func flagsWith(v string) string {
	return `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"` + v + `"}}}`
}

// configMapDir lays out dir as kubelet does for a ConfigMap volume:
// dir/..2026_<n>/flags.json, dir/..data -> ..2026_<n>, dir/flags.json ->
// ..data/flags.json. Each update writes a new timestamped directory, points
// a temporary symlink at it and renames that over ..data (one atomic
// rename), then deletes the old directory.
type configMapDir struct {
	dir string
	n   int
	cur string
}

func newConfigMapDir(t *testing.T, content string) *configMapDir {
	t.Helper()
	c := &configMapDir{dir: t.TempDir()}
	c.update(t, content)
	if err := os.Symlink(filepath.Join("..data", "flags.json"), filepath.Join(c.dir, "flags.json")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMapDir) path() string { return filepath.Join(c.dir, "flags.json") }

func (c *configMapDir) update(t *testing.T, content string) {
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_11_29_20_00_00.%09d", c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, "flags.json"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if c.cur != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.cur)); err != nil {
			t.Fatal(err)
		}
	}
	c.cur = ts
}

// runFileSource runs fs.Run until the test ends.
func runFileSource(t *testing.T, fs *FileSource) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fs.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitVariant polls until flag f answers want, failing after the deadline.
func waitVariant(t *testing.T, fs *FileSource, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ch := fs.Changed()
		r := fs.Current().Evaluate("f", nil)
		if r.Variant == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flag f still answers %q, want %q (status %+v)", r.Variant, want, fs.Status())
		}
		select {
		case <-ch:
		case <-time.After(time.Until(deadline)):
		}
	}
}

// TestFileSourceInotify: with the interval check effectively off (1 hour),
// every way a flag file is replaced in practice is seen through the
// directory watch — a ConfigMap's ..data symlink swap, an editor's rename
// over the file, an in-place rewrite, a delete and re-create — and a bad
// file arriving any of those ways is rejected whole while the previous
// flags keep serving.
func TestFileSourceInotify(t *testing.T) {
	type layout struct {
		path   func() string
		update func(string)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, content string) layout
	}{
		{"configmap symlink swap", func(t *testing.T, content string) layout {
			c := newConfigMapDir(t, content)
			return layout{c.path, func(s string) { c.update(t, s) }}
		}},
		{"rename over", func(t *testing.T, content string) layout {
			p := filepath.Join(t.TempDir(), "flags.json")
			writeFlags(t, p, content)
			return layout{func() string { return p }, func(s string) { writeFlags(t, p, s) }}
		}},
		{"write in place", func(t *testing.T, content string) layout {
			p := filepath.Join(t.TempDir(), "flags.json")
			writeFlags(t, p, content)
			return layout{func() string { return p }, func(s string) {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					t.Fatal(err)
				}
				// Two writes, as an editor flushing its buffer may do: the
				// debounce reads the file once it is whole.
				half := len(s) / 2
				if _, err := f.WriteString(s[:half]); err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString(s[half:]); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"delete and re-create", func(t *testing.T, content string) layout {
			p := filepath.Join(t.TempDir(), "flags.json")
			writeFlags(t, p, content)
			return layout{func() string { return p }, func(s string) {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"symlink to a file in another directory, target rewritten", func(t *testing.T, content string) layout {
			real := filepath.Join(t.TempDir(), "real.json")
			writeFlags(t, real, content)
			p := filepath.Join(t.TempDir(), "flags.json")
			if err := os.Symlink(real, p); err != nil {
				t.Fatal(err)
			}
			return layout{func() string { return p }, func(s string) { writeFlags(t, real, s) }}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := c.setup(t, flagsWith("on"))
			reg := prometheus.NewRegistry()
			fs, err := NewFileSource(FileOptions{Path: l.path(), Interval: time.Hour, Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			runFileSource(t, fs)
			waitVariant(t, fs, "on")

			l.update(flagsWith("off"))
			waitVariant(t, fs, "off")
			v := fs.Current().Version()

			// A bad file is rejected whole; version and answers stay.
			l.update(strings.Replace(flagsWith("on"), `"defaultVariant":"on"`, `"defaultVariant":"blue"`, 1))
			// A write in place can be read half-way (truncated, then the
			// first half) under load; the error must end up naming the field
			// once the whole file is there.
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(fs.Status().(FileStatus).LastError, "flags.f.defaultVariant") {
				if time.Now().After(deadline) {
					t.Fatalf("bad file not noticed, or its error does not name the field: %+v", fs.Status())
				}
				time.Sleep(time.Millisecond) // polling an unexported state with a deadline
			}
			if got := fs.Current(); got.Version() != v || got.Evaluate("f", nil).Variant != "off" {
				t.Fatalf("after a bad file: version %d variant %q, want %d off", got.Version(), got.Evaluate("f", nil).Variant, v)
			}
			if ok, _ := fs.Ready(); !ok {
				t.Error("a rejected newer file must not make the source unready")
			}

			// The next good file is served and clears the error.
			l.update(flagsWith("on"))
			waitVariant(t, fs, "on")
			if st := fs.Status().(FileStatus); st.LastError != "" || st.Version != v+1 {
				t.Errorf("after recovery: %+v, want version %d and no error", st, v+1)
			}
			if n := counter(t, reg, "pennon_reload_failures_total"); n < 1 {
				t.Errorf("pennon_reload_failures_total = %v, want the bad file counted", n)
			}
		})
	}
}

// TestFileSourceIntervalFallback: with inotify off the interval check
// alone still picks up a ConfigMap swap.
func TestFileSourceIntervalFallback(t *testing.T) {
	c := newConfigMapDir(t, flagsWith("on"))
	fs, err := NewFileSource(FileOptions{Path: c.path(), Interval: 5 * time.Millisecond, NoWatch: true})
	if err != nil {
		t.Fatal(err)
	}
	runFileSource(t, fs)
	c.update(t, flagsWith("off"))
	waitVariant(t, fs, "off")
}

// TestFileSourceIgnoresUnrelatedFiles: other files in the directory do
// not produce new versions.
func TestFileSourceIgnoresUnrelatedFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "flags.json")
	writeFlags(t, p, flagsWith("on"))
	fs, err := NewFileSource(FileOptions{Path: p, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runFileSource(t, fs)
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("other-%d.json", i)), []byte("not flags"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A real change after the noise is seen, and it is version 2: the
	// unrelated writes neither reloaded nor failed anything.
	writeFlags(t, p, flagsWith("off"))
	waitVariant(t, fs, "off")
	if st := fs.Status().(FileStatus); st.Version != 2 || st.LastError != "" {
		t.Fatalf("status %+v, want version 2 without errors", st)
	}
}
