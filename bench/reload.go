package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"

	flagsync "github.com/pennon-dev/pennon/sync"
)

// ReloadStyles are the ways a flag file is replaced in practice, as
// RunReload can rewrite it.
var ReloadStyles = []string{"configmap", "rename", "inplace"}

// ReloadOptions configure RunReload.
type ReloadOptions struct {
	// Style: configmap (kubelet: new timestamped directory, ..data symlink
	// swapped by rename), rename (an editor's write-then-rename over the
	// file) or inplace (truncate and write the same inode).
	Style string
	// Changes is how many changes are timed; default 200.
	Changes int
	// Flags is the number of flags in the document; default 6 (the
	// propagation benchmarks' size). Parsing and compiling a large file is
	// part of the measured time.
	Flags int
	// Interval is the FileSource's fallback check; default 1s, the
	// sidecar's default, so the figure shows what inotify adds.
	Interval time.Duration
	// NoWatch measures the interval check alone (today's behaviour before
	// inotify), for a same-run reference.
	NoWatch bool
	// Pause between changes; default 5ms.
	Pause time.Duration
	// Dir holds the files; default a new temporary directory, removed after.
	Dir string
}

// ReloadResult is the distribution of change → visible: from the moment the
// writer's last step (the rename, or the write's close) returns to the
// moment the FileSource serves the new content.
type ReloadResult struct {
	Style    string        `json:"style"`
	Watch    bool          `json:"inotify"`
	Interval time.Duration `json:"interval"`
	Flags    int           `json:"flags"`
	Changes  int           `json:"changes"`
	P50      time.Duration `json:"p50"`
	P90      time.Duration `json:"p90"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
}

func (r *ReloadResult) String() string {
	w := "inotify"
	if !r.Watch {
		w = "interval only"
	}
	return fmt.Sprintf("%-9s %-13s interval %-6v flags %-6d changes %-4d p50 %-9v p90 %-9v p99 %-9v max %v",
		r.Style, w, r.Interval, r.Flags, r.Changes, r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond),
		r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// RunReload measures how soon a rewritten flag file is served by pennon's
// real FileSource (package sync), rewriting it o.Changes times the way
// o.Style says. Each change sets a marker flag to a new variant; the time
// is taken when the FileSource's snapshot answers it.
func RunReload(ctx context.Context, o ReloadOptions) (*ReloadResult, error) {
	if o.Changes <= 0 {
		o.Changes = 200
	}
	if o.Flags <= 0 {
		o.Flags = 6
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Pause <= 0 {
		o.Pause = 5 * time.Millisecond
	}
	if o.Style == "" {
		o.Style = "configmap"
	}
	w, err := NewFileWriter(o.Style, o.Dir)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := w.Write(reloadDoc(o.Flags, 0)); err != nil {
		return nil, err
	}
	fs, err := flagsync.NewFileSource(flagsync.FileOptions{Path: w.Path(), Interval: o.Interval, NoWatch: o.NoWatch, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("reload bench: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fs.Run(rctx) }()
	defer func() { cancel(); <-done }()

	lat := make([]time.Duration, 0, o.Changes)
	for i := 1; i <= o.Changes; i++ {
		want := "v" + strconv.Itoa(i)
		changed := fs.Changed()
		if err := w.Write(reloadDoc(o.Flags, i)); err != nil {
			return nil, err
		}
		t0 := time.Now()
		deadline := time.NewTimer(o.Interval + 10*time.Second)
		for fs.Current().Evaluate("reload-marker", nil).Variant != want {
			select {
			case <-changed:
				changed = fs.Changed()
			case <-deadline.C:
				return nil, fmt.Errorf("reload bench: change %d not served after %v (status %+v)", i, o.Interval+10*time.Second, fs.Status())
			case <-ctx.Done():
				deadline.Stop()
				return nil, ctx.Err()
			}
		}
		lat = append(lat, time.Since(t0))
		deadline.Stop()
		select {
		case <-time.After(o.Pause):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return &ReloadResult{Style: o.Style, Watch: !o.NoWatch, Interval: o.Interval, Flags: o.Flags, Changes: len(lat),
		P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: lat[len(lat)-1]}, nil
}

// reloadDoc is a flagd document: GenerateDocument-style flags plus the
// marker flag whose default variant is "v<rev>".
func reloadDoc(n, rev int) []byte {
	doc := GenerateDocument(n - 1)
	marker := `"reload-marker":{"state":"ENABLED","variants":{"v` + strconv.Itoa(rev) + `":` + strconv.Itoa(rev) + `},"defaultVariant":"v` + strconv.Itoa(rev) + `"}`
	// GenerateDocument returns {"flags":{...}}: splice the marker in first.
	const head = `{"flags":{`
	out := make([]byte, 0, len(doc)+len(marker)+1)
	out = append(out, head...)
	out = append(out, marker...)
	if rest := doc[len(head):]; len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
		out = append(out, rest...)
	} else {
		out = append(out, rest...)
	}
	return out
}

// FileWriter replaces a flag file the way one kind of writer does.
type FileWriter struct {
	style, dir string
	ownDir     bool
	n          int
	cur        string // configmap: the current timestamped directory
}

// NewFileWriter prepares dir (a new temporary directory when empty) for
// style: configmap, rename or inplace.
func NewFileWriter(style, dir string) (*FileWriter, error) {
	switch style {
	case "configmap", "rename", "inplace":
	default:
		return nil, fmt.Errorf("reload style: unknown %q (allowed: configmap, rename, inplace)", style)
	}
	w := &FileWriter{style: style, dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "pennon-reload-")
		if err != nil {
			return nil, fmt.Errorf("reload bench: %w", err)
		}
		w.dir, w.ownDir = d, true
	}
	return w, nil
}

// Path is the file a sidecar is pointed at (--file).
func (w *FileWriter) Path() string { return filepath.Join(w.dir, "flags.json") }

// Close removes the directory if NewFileWriter created it.
func (w *FileWriter) Close() error {
	if w.ownDir {
		return os.RemoveAll(w.dir)
	}
	return nil
}

// Write replaces the file's content with b.
//
//   - configmap: as kubelet's atomic writer updates a ConfigMap volume —
//     write ..<timestamp>/flags.json, symlink ..data_tmp to it, rename
//     ..data_tmp over ..data, remove the previous timestamped directory;
//     flags.json is a symlink to ..data/flags.json made on the first write.
//   - rename: write flags.json.tmp, rename it over flags.json (editors,
//     config management tools).
//   - inplace: open flags.json with O_TRUNC and write (editors that keep
//     the inode, `cat > flags.json`).
func (w *FileWriter) Write(b []byte) error {
	w.n++
	switch w.style {
	case "configmap":
		ts := "..2026_01_01_00_00_00." + strconv.Itoa(w.n)
		if err := os.Mkdir(filepath.Join(w.dir, ts), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(w.dir, ts, "flags.json"), b, 0o644); err != nil {
			return err
		}
		tmp := filepath.Join(w.dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(w.dir, "..data")); err != nil {
			return err
		}
		if w.cur == "" {
			if err := os.Symlink(filepath.Join("..data", "flags.json"), w.Path()); err != nil {
				return err
			}
		} else if err := os.RemoveAll(filepath.Join(w.dir, w.cur)); err != nil {
			return err
		}
		w.cur = ts
		return nil
	case "rename":
		tmp := w.Path() + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, w.Path())
	case "inplace":
		f, err := os.OpenFile(w.Path(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(b)
		return errors.Join(err, f.Close())
	}
	return nil
}
