package flagsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
)

// FileOptions configure a FileSource.
type FileOptions struct {
	Path string // the flag document; required
	// Interval between checks for changes; default 1s. Polling the file's
	// content hash (not inotify) also works for Kubernetes ConfigMaps, which
	// are swapped through symlinks.
	Interval time.Duration
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

// Run checks the file every Interval until ctx is cancelled.
func (fs *FileSource) Run(ctx context.Context) {
	t := time.NewTicker(fs.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = fs.reload() // reload logs and records its own errors
		}
	}
}

// reload reads the file and swaps in a new snapshot if the content changed.
func (fs *FileSource) reload() error {
	data, err := os.ReadFile(fs.o.Path)
	if err != nil {
		return fs.fail(fmt.Errorf("read %s: %w", fs.o.Path, err))
	}
	sum := sha256.Sum256(data)
	fs.mu.Lock()
	same := bytes.Equal(sum[:], fs.sum[:]) && fs.version > 0
	fs.mu.Unlock()
	if same {
		return nil
	}
	doc, err := config.Parse(data)
	if err != nil {
		return fs.failSum(sum, fmt.Errorf("%s is invalid, keeping the previous flags:\n%w", fs.o.Path, err))
	}
	fs.mu.Lock()
	next := fs.version + 1
	fs.mu.Unlock()
	snap, err := doc.Compile(next)
	if err != nil {
		return fs.failSum(sum, fmt.Errorf("%s does not compile, keeping the previous flags:\n%w", fs.o.Path, err))
	}
	fs.mu.Lock()
	fs.sum, fs.version, fs.loadedAt, fs.lastError = sum, next, time.Now().UTC(), ""
	fs.mu.Unlock()
	fs.Store(snap)
	fs.reloads.Inc()
	fs.log.Info("flags loaded", zap.String("file", fs.o.Path), zap.Uint64("version", next), zap.Int("flags", snap.Len()), zap.String("hash", doc.Hash()))
	return nil
}

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
