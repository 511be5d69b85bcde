package flagsync

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// lkgFile is the last-known-good copy on disk: the snapshot record plus a
// checksum of its bytes, so a torn or edited file is detected and ignored.
// The checksum only catches accidents; authenticity comes from signatures:
// the record carries the control plane's snapshot signature, or Proof is the
// signed changeset it was built from (same env, version, time and hash).
// Keys are the signing keys this sidecar trusted when it wrote the file,
// used at the next cold start only when no key is pinned (--trust-key): an
// unpinned sidecar therefore trusts its own state dir like it trusts the
// control plane on first use.
type lkgFile struct {
	Checksum string                  `json:"checksum"` // sha256 hex of Record
	Record   json.RawMessage         `json:"record"`
	Proof    *config.SignedChangeset `json:"proof,omitempty"`
	Keys     []string                `json:"keys,omitempty"`

	rec *config.SnapshotRecord
}

func (f *lkgFile) trustKeys() []sign.PublicKey {
	var out []sign.PublicKey
	for _, s := range f.Keys {
		if k, err := sign.ParsePublicKey(s); err == nil {
			out = append(out, k)
		}
	}
	return out
}

func lkgPath(dir, env string) string { return filepath.Join(dir, "pennon-lkg-"+env+".json") }

// writeLKGFile writes atomically: temp file, fsync, rename, fsync the
// directory. rec.Document must be set. The record is encoded once and
// streamed into the file and its checksum: at 100,000 flags it is 16 MB,
// and encoding the wrapper around it would validate and copy it again.
func writeLKGFile(dir string, rec *config.SnapshotRecord, proof *config.SignedChangeset, trust *sign.Trust) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("last-known-good record v%d: %w", rec.Version, err)
	}
	sum := sha256.Sum256(body)
	// The fields of lkgFile, in its order; readLKGFile decodes lkgFile.
	head, _ := json.Marshal(hex.EncodeToString(sum[:]))
	var tail []byte
	if proof != nil {
		p, _ := json.Marshal(proof)
		tail = append(append(tail, `,"proof":`...), p...)
	}
	if trust != nil && trust.Len() > 0 {
		var keys []string
		for _, k := range trust.Keys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		k, _ := json.Marshal(keys)
		tail = append(append(tail, `,"keys":`...), k...)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	final := lkgPath(dir, rec.Env)
	tmp, err := os.CreateTemp(dir, ".lkg-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 256<<10)
	for _, part := range [][]byte{[]byte(`{"checksum":`), head, []byte(`,"record":`), body, tail, []byte("}")} {
		_, _ = bw.Write(part) // a failed write is reported by Flush
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// lkgWriter keeps the last-known-good copy on disk up to date without
// slowing down what it copies. Writing the file (encoding, fsync, rename,
// fsync of the directory: tens of milliseconds at 10,000 flags, more on a
// slow disk) used to happen inside every install, under the lock that
// Status, Ready and reports take, so commit → applied grew with the flag
// set and the disk. Installs now only hand the newest record over (offer);
// one goroutine, owned by Remote.Run, writes it.
//
// Coalescing: a record offered while a write is under way replaces any
// record still waiting, so a burst of changesets writes the first and the
// last, not each one. Order: offers are made in install order (under the
// Remote's lock) and the single writer always takes the newest, so an
// older record is never written over a newer one; a rewind (the control
// plane's truth at a lower version) is newer in that order and is written.
//
// The records the sidecar serves carry no document bytes (the parsed
// document is kept instead) and, when built from a changeset, no per-flag
// versions: both are O(flags) and nothing on the apply path reads them.
// The writer encodes the document (Document.Canonical) and derives the
// per-flag versions from the last full record's and the changesets
// applied since, which the offers keep for it.
type lkgWriter struct {
	dir, env string
	log      *zap.Logger
	keys     func() *sign.Trust // trusted keys, stored for the next cold start
	wake     chan struct{}      // capacity 1: "there is something to write"

	mu     sync.Mutex
	newest *lkgJob // waiting to be written; nil: nothing new
	last   *lkgJob // the newest record offered, written or not (rewrite)
	// fv are the per-flag versions the changes start from; fvGen counts
	// full records, so the writer knows whether its fv is still the base.
	fv      map[string]uint64
	fvGen   uint64
	changes []*config.Changeset
	// Write results: err is the last failure while the streak lasts.
	err      string
	failures int // in the current streak
	writes   int // files written, for tests and the recovery log line

	beforeWrite func(*config.SnapshotRecord) // test hook: runs in the writer before each write
}

// lkgJob is one record to write, with the document it was verified as.
type lkgJob struct {
	rec   *config.SnapshotRecord
	doc   *config.Document
	proof *config.SignedChangeset
}

func newLKGWriter(dir, env string, log *zap.Logger, keys func() *sign.Trust) *lkgWriter {
	return &lkgWriter{dir: dir, env: env, log: log, keys: keys, wake: make(chan struct{}, 1)}
}

// offer hands over a record just installed: cs is the changeset it was
// built from (its flag versions follow from the previous record's), nil
// for a full record (a snapshot or the disk copy) whose FlagVersions are
// complete. write is false for the disk copy itself: it becomes the base
// of later changesets but is not written back. offer never blocks on the
// disk.
func (w *lkgWriter) offer(rec *config.SnapshotRecord, doc *config.Document, proof *config.SignedChangeset, cs *config.Changeset, write bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cs == nil {
		w.fv, w.changes = rec.FlagVersions, nil
		w.fvGen++
	} else {
		w.changes = append(w.changes, cs)
	}
	w.last = &lkgJob{rec: rec, doc: doc, proof: proof}
	if write {
		w.newest = w.last
		w.poke()
	}
}

// rewrite writes the newest record again (the trusted keys changed).
func (w *lkgWriter) rewrite() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last != nil && w.newest == nil {
		w.newest = w.last
		w.poke()
	}
}

func (w *lkgWriter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pacing: after a write that took d the writer rests lkgPace×d, at least
// lkgMinRest and at most lkgMaxRest, before the next. However fast changes
// arrive it then uses at most a tenth of a core (the rest goes to applying
// and serving them) and writes at most ten files a second, even on a disk
// where a write takes no time: a burst of changes coalesces into a few
// files. The copy lags by at most a rest and a write, which only matters
// to a cold start that finds no control plane.
const (
	lkgPace    = 9
	lkgMinRest = 100 * time.Millisecond
	lkgMaxRest = 2 * time.Second
)

// run writes offered records until ctx ends, then writes the newest one
// still waiting, so that the copy on disk is what was served last when
// Remote.Run returns (Run cancels ctx only after its own loop stopped
// installing).
func (w *lkgWriter) run(ctx context.Context) {
	rest := time.NewTimer(0)
	defer rest.Stop()
	for {
		select {
		case <-rest.C:
		case <-ctx.Done():
			w.writeNewest()
			return
		}
		select {
		case <-w.wake:
			start := time.Now()
			w.writeNewest()
			rest.Reset(min(max(lkgPace*time.Since(start), lkgMinRest), lkgMaxRest))
		case <-ctx.Done():
			w.writeNewest()
			return
		}
	}
}

// writeNewest writes the record waiting, if any.
func (w *lkgWriter) writeNewest() {
	w.mu.Lock()
	job := w.newest
	w.newest = nil
	base, changes, gen := w.fv, w.changes, w.fvGen
	w.changes = nil
	w.mu.Unlock()
	if job == nil {
		return
	}
	// The waiting record is the newest offer, so it is base + changes.
	fv := base
	if len(changes) > 0 {
		fv = maps.Clone(base)
		if fv == nil {
			fv = map[string]uint64{}
		}
		for _, cs := range changes {
			for _, ch := range cs.Changes {
				if ch.Op == config.OpDelete {
					delete(fv, ch.Flag)
				} else {
					fv[ch.Flag] = cs.Version
				}
			}
		}
		// Changes offered meanwhile follow this record, unless a full
		// record arrived meanwhile: then that is the base.
		w.mu.Lock()
		if w.fvGen == gen {
			w.fv = fv
		}
		w.mu.Unlock()
	}
	rec := *job.rec
	rec.FlagVersions = fv
	if rec.Document == nil {
		rec.Document = job.doc.Canonical()
	}
	if w.beforeWrite != nil {
		w.beforeWrite(&rec)
	}
	err := writeLKGFile(w.dir, &rec, job.proof, w.keys())
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failures++
		if w.err == "" {
			// Once per streak: the next changes retry and would repeat it.
			w.log.Warn("last-known-good copy not written; retrying with the next change", zap.String("file", lkgPath(w.dir, w.env)),
				zap.Uint64("version", rec.Version), zap.Error(err))
		}
		w.err = err.Error()
		return
	}
	w.writes++
	if w.err != "" {
		w.log.Info("last-known-good copy written again", zap.String("file", lkgPath(w.dir, w.env)), zap.Uint64("version", rec.Version),
			zap.Int("failedWrites", w.failures))
	}
	w.err, w.failures = "", 0
}

// status is the last write's error ("" after a success) and the number of
// files written.
func (w *lkgWriter) status() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err, w.writes
}

// readLKG reads the last-known-good record (checksum and env checked; the
// signature is checked by the caller).
func readLKG(dir, env string) (*config.SnapshotRecord, error) {
	f, err := readLKGFile(dir, env)
	if err != nil {
		return nil, err
	}
	return f.rec, nil
}

func readLKGFile(dir, env string) (*lkgFile, error) {
	data, err := os.ReadFile(lkgPath(dir, env))
	if err != nil {
		return nil, err
	}
	var f lkgFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("last-known-good file is corrupt: %w", err)
	}
	sum := sha256.Sum256(f.Record)
	if hex.EncodeToString(sum[:]) != f.Checksum {
		return nil, fmt.Errorf("last-known-good file checksum mismatch (torn or edited)")
	}
	var rec config.SnapshotRecord
	if err := json.Unmarshal(f.Record, &rec); err != nil {
		return nil, fmt.Errorf("last-known-good record is corrupt: %w", err)
	}
	if rec.Env != env {
		return nil, fmt.Errorf("last-known-good file is for env %q, not %q", rec.Env, env)
	}
	f.rec = &rec
	return &f, nil
}
