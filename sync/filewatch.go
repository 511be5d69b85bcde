package flagsync

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
)

// FileOptions configure a FileSource.
type FileOptions struct {
	Path string // the flag document; required
	// Interval between fallback checks of the file's content hash; default
	// 1s. Changes are normally seen at once through inotify (see Run); the
	// interval check catches what a watch can miss (network file systems,
	// an exhausted inotify limit, a directory replaced under the watch).
	Interval time.Duration
	// Debounce is how long Run waits after the last file-system event
	// before reading the file, so that an editor's truncate-then-write or
	// kubelet's several renames are read once, whole; default 1ms. A burst
	// of events never delays a reload by more than 25 × Debounce.
	Debounce time.Duration
	// NoWatch disables inotify: only the interval check runs.
	NoWatch  bool
	Logger   *zap.Logger
	Registry prometheus.Registerer // optional: reload metrics
}

// FileSource serves a flag file and reloads it when its content changes. A
// new file that fails validation is rejected whole: the previous flags keep
// serving and the error, with its JSON paths, is logged once and reported in
// Status until a good file arrives.
type FileSource struct {
	evaluator.Holder
	o   FileOptions
	log *zap.Logger

	reloads, failures prometheus.Counter

	mu        sync.Mutex
	sum       [32]byte
	version   uint64
	loadedAt  time.Time
	lastError string
	errorAt   time.Time
}

// NewFileSource loads the file once; an invalid or missing file at start is
// an error (a sidecar must not come up serving nothing it was told to serve).
func NewFileSource(o FileOptions) (*FileSource, error) {
	if o.Path == "" {
		return nil, fmt.Errorf("file source: Path is required")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Debounce <= 0 {
		o.Debounce = time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	fs := &FileSource{o: o, log: o.Logger,
		reloads:  prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_reloads_total", Help: "Flag files loaded successfully."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_reload_failures_total", Help: "Flag file loads rejected (invalid or unreadable)."}),
	}
	if o.Registry != nil {
		o.Registry.MustRegister(fs.reloads, fs.failures)
	}
	if err := fs.reload(); err != nil {
		return nil, err
	}
	return fs, nil
}

// Run reloads the file when it changes until ctx is cancelled.
//
// It watches the file's DIRECTORY with inotify (fsnotify), not the file:
// Kubernetes updates a ConfigMap volume by writing a new timestamped
// directory and renaming a `..data` symlink over the old one, and editors
// save by renaming a new file over the old one — both replace the inode a
// file watch would be attached to, while the directory sees every step.
// When the path is a symlink into another directory (a ConfigMap's
// flags.json -> ..data/flags.json, or a link elsewhere), that directory is
// watched too, and the set is re-resolved after each reload. Any event in a
// watched directory schedules a reload after Debounce of quiet; the reload
// compares the content hash, so unrelated events cost one read. The
// Interval check keeps running as the fallback.
func (fs *FileSource) Run(ctx context.Context) {
	t := time.NewTicker(fs.o.Interval)
	defer t.Stop()
	w := fs.newWatch()
	if w != nil {
		defer w.close()
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.w.Events, w.w.Errors
		// A change between NewFileSource's load and the watch is not an
		// event: look once now that the watch is in place.
		_ = fs.reload()
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	var first time.Time // first event of the pending burst
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = fs.reload() // reload logs and records its own errors
			if w != nil {
				w.resolve()
			}
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !w.relevant(ev) {
				continue
			}
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			// Wait for quiet, but never longer than a bound after the
			// first event: a file rewritten continuously still reloads.
			wait := fs.o.Debounce
			if now.Sub(first)+wait > 25*fs.o.Debounce {
				wait = max(0, 25*fs.o.Debounce-now.Sub(first))
			}
			debounce.Reset(wait)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflow lost events: reload now rather than trust the
			// stream. Other errors leave the interval check in charge.
			fs.log.Warn("flag file watch error; the interval check still runs", zap.String("file", fs.o.Path), zap.Error(err))
			_ = fs.reload()
			w.resolve()
		case <-debounce.C:
			first = time.Time{}
			_ = fs.reload()
			w.resolve()
		}
	}
}

// watch is Run's inotify state: the directories watched for the file.
type watch struct {
	fs   *FileSource
	w    *fsnotify.Watcher
	dirs map[string]bool
	// names are the base names in the watched directories whose events
	// matter: the file, the link target's name, and kubelet's `..`-prefixed
	// entries (..data and the timestamped directories).
	names map[string]bool
}

// newWatch starts watching; nil when inotify is off or unavailable (the
// reason is logged once, and the interval check serves alone).
func (fs *FileSource) newWatch() *watch {
	if fs.o.NoWatch {
		return nil
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		fs.log.Warn("cannot watch the flag file; checking it every interval instead (raise fs.inotify.max_user_instances to fix)",
			zap.String("file", fs.o.Path), zap.Duration("interval", fs.o.Interval), zap.Error(err))
		return nil
	}
	w := &watch{fs: fs, w: fw, dirs: map[string]bool{}}
	w.resolve()
	if len(w.dirs) == 0 {
		fs.log.Warn("cannot watch the flag file's directory; checking it every interval instead",
			zap.String("file", fs.o.Path), zap.Duration("interval", fs.o.Interval))
	}
	return w
}

// resolve watches the directory of the path and of its resolved target,
// and stops watching directories no longer involved (a ConfigMap's old
// timestamped directory).
func (w *watch) resolve() {
	if w == nil {
		return
	}
	p := filepath.Clean(w.fs.o.Path)
	want := map[string]bool{filepath.Dir(p): true}
	names := map[string]bool{filepath.Base(p): true}
	if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
		want[filepath.Dir(real)] = true
		names[filepath.Base(real)] = true
	}
	for d := range want {
		if w.dirs[d] {
			continue
		}
		if err := w.w.Add(d); err != nil {
			w.fs.log.Warn("cannot watch directory; the interval check covers it", zap.String("dir", d), zap.Error(err))
			continue
		}
		w.dirs[d] = true
	}
	for d := range w.dirs {
		if !want[d] {
			_ = w.w.Remove(d) // already gone when kubelet deleted it
			delete(w.dirs, d)
		}
	}
	w.names = names
}

// relevant reports whether ev can have changed the file's content.
func (w *watch) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	return w.names[base] || strings.HasPrefix(base, "..")
}

func (w *watch) close() { _ = w.w.Close() }

// reload reads the file and swaps in a new snapshot if the content changed.
//
// The content is first hashed through a small buffer and read whole only
// when the hash differs: the interval check runs every second, and reading
// a 16 MB file (100,000 flags) each time made 16 MB of garbage a second
// that kept an idle sidecar collecting and its heap near the goal.
func (fs *FileSource) reload() error {
	fs.mu.Lock()
	loaded := fs.version > 0
	fs.mu.Unlock()
	// Hashing the file first only pays when there is something it could
	// equal: not at start-up (16 MB at 100,000 flags).
	if loaded {
		if sum, err := fileSum(fs.o.Path); err == nil && fs.seen(sum) {
			return nil
		}
	}
	data, err := os.ReadFile(fs.o.Path)
	if err != nil {
		return fs.fail(fmt.Errorf("read %s: %w", fs.o.Path, err))
	}
	// The bytes parsed are the bytes recorded: the file may have changed
	// again since it was hashed.
	sum := sha256.Sum256(data)
	if fs.seen(sum) {
		return nil
	}
	fs.mu.Lock()
	next := fs.version + 1
	fs.mu.Unlock()
	// Only the snapshot and the hash are kept: ParseCompiled validates
	// exactly as Parse does without leaving the parsed document's memory
	// behind (bench/results/scale.md).
	snap, hash, err := config.ParseCompiled(data, next)
	if err != nil {
		return fs.failSum(sum, fmt.Errorf("%s is invalid, keeping the previous flags:\n%w", fs.o.Path, err))
	}
	fs.mu.Lock()
	fs.sum, fs.version, fs.loadedAt, fs.lastError = sum, next, time.Now().UTC(), ""
	fs.mu.Unlock()
	fs.Store(snap)
	fs.reloads.Inc()
	fs.log.Info("flags loaded", zap.String("file", fs.o.Path), zap.Uint64("version", next), zap.Int("flags", snap.Len()), zap.String("hash", hash))
	return nil
}

// seen reports whether content with this SHA-256 was loaded or rejected
// last, so there is nothing to do.
func (fs *FileSource) seen(sum [32]byte) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return sum == fs.sum && fs.version > 0
}

// fileSum is the SHA-256 of the file at path, read through a pooled
// buffer.
func fileSum(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer func() { _ = f.Close() }()
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	h := sha256.New()
	if _, err := io.CopyBuffer(h, readerOnly{f}, *bp); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// readerOnly hides *os.File's WriterTo, so io.CopyBuffer uses the buffer.
type readerOnly struct{ io.Reader }

var sumBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func (fs *FileSource) fail(err error) error { return fs.failSum([32]byte{}, err) }

// failSum records a rejected load. The same bad content is reported once,
// not every poll.
func (fs *FileSource) failSum(sum [32]byte, err error) error {
	fs.mu.Lock()
	repeat := fs.lastError == err.Error()
	fs.lastError, fs.errorAt = err.Error(), time.Now().UTC()
	if sum != ([32]byte{}) {
		fs.sum = sum // do not re-parse the same bad bytes every interval
	}
	first := fs.version == 0
	fs.mu.Unlock()
	if !repeat {
		fs.failures.Inc()
		if !first {
			fs.log.Error("flag file rejected", zap.String("file", fs.o.Path), zap.Error(err))
		}
	}
	return err
}

// FileStatus is FileSource's part of /v1/status.
type FileStatus struct {
	Mode      string     `json:"mode"`
	File      string     `json:"file"`
	Version   uint64     `json:"version"`
	LoadedAt  time.Time  `json:"loadedAt"`
	LastError string     `json:"lastError,omitempty"`
	ErrorAt   *time.Time `json:"lastErrorAt,omitempty"`
}

// Status implements proxy.StatusSource.
func (fs *FileSource) Status() any {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	st := FileStatus{Mode: "file", File: fs.o.Path, Version: fs.version, LoadedAt: fs.loadedAt, LastError: fs.lastError}
	if fs.lastError != "" {
		t := fs.errorAt
		st.ErrorAt = &t
	}
	return st
}

// Ready implements proxy.StatusSource: a file source is ready once loaded;
// a rejected newer file does not make it unready (it keeps serving).
func (fs *FileSource) Ready() (bool, string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.version == 0 {
		return false, "flag file not loaded"
	}
	if fs.lastError != "" {
		return true, "serving version " + fmt.Sprint(fs.version) + "; newer file rejected: see /v1/status"
	}
	return true, "serving " + fs.o.Path + " version " + fmt.Sprint(fs.version)
}
