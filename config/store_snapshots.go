package config

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// snapshotWriteTimeout bounds one KV snapshot write made off the commit
// path: a 100,000-flag record is ~16 MB, written in well under a second on
// a healthy JetStream; a write stuck longer (NATS unreachable) gives up and
// the next due snapshot tries again.
const snapshotWriteTimeout = 30 * time.Second

// snapshotWriter is the state of the periodic KV snapshot writes. Commit
// only hands a due snapshot over (snapshotDue); a goroutine per
// environment, started when there is something to write and ending when
// there is nothing left, encodes and writes it. Encoding and writing a
// 100,000-flag record (16 MB) took most of a commit's p99 when it ran
// inline under the environment's commit lock.
//
// The snapshot is an optimisation: a reader starts from it and replays the
// log after it, and one that finds none replays the whole log. So a lost,
// late or skipped snapshot costs replay time, never correctness; it is
// written only after its version was acknowledged by the stream, so it is
// never ahead of the log. The zero value is ready to use.
type snapshotWriter struct {
	mu      sync.Mutex
	pending map[string]*State // per env, the newest due snapshot no goroutine has taken yet
	running map[string]bool   // env has a writer goroutine
	idle    chan struct{}     // non-nil while any writer runs; closed when the last ends
	closed  bool              // Close was called: due snapshots are written inline
	failing map[string]snapshotFailure

	putMu   sync.Mutex             // guards putLock and written
	putLock map[string]*sync.Mutex // per env: one Put at a time
	written map[string]uint64      // per env, the newest version this store wrote
}

// snapshotFailure is an open failure episode: the last write failed and no
// write has succeeded since.
type snapshotFailure struct {
	version uint64
	err     error
}

// snapshotDue hands the snapshot of st, which just became due, to the
// environment's writer. If a snapshot of the same environment is still
// waiting, only the newer one is kept: writing the older would be wasted
// (readers want the newest) and would hold back the newer.
func (s *Store) snapshotDue(st *State) {
	w := &s.snapw
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotWriteTimeout)
		defer cancel()
		s.noteSnapshotWrite(st, s.writeSnapshot(ctx, st))
		return
	}
	if w.pending == nil {
		w.pending, w.running = map[string]*State{}, map[string]bool{}
	}
	if p := w.pending[st.Env]; p == nil || p.Version < st.Version {
		w.pending[st.Env] = st
	}
	if !w.running[st.Env] {
		w.running[st.Env] = true
		if w.idle == nil {
			w.idle = make(chan struct{})
		}
		go s.writeSnapshots(st.Env)
	}
	w.mu.Unlock()
}

// writeSnapshots writes env's due snapshots, newest first taken, until none
// is waiting, then ends.
func (s *Store) writeSnapshots(env string) {
	w := &s.snapw
	for {
		w.mu.Lock()
		st := w.pending[env]
		if st == nil {
			delete(w.running, env)
			if len(w.running) == 0 && w.idle != nil {
				close(w.idle)
				w.idle = nil
			}
			w.mu.Unlock()
			return
		}
		delete(w.pending, env)
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotWriteTimeout)
		err := s.writeSnapshot(ctx, st)
		cancel()
		s.noteSnapshotWrite(st, err)
	}
}

// noteSnapshotWrite logs a failed write once per episode (the first
// failure after a success), and the write that ends the episode.
func (s *Store) noteSnapshotWrite(st *State, err error) {
	w := &s.snapw
	w.mu.Lock()
	defer w.mu.Unlock()
	f, was := w.failing[st.Env]
	switch {
	case err != nil && !was:
		if w.failing == nil {
			w.failing = map[string]snapshotFailure{}
		}
		w.failing[st.Env] = snapshotFailure{version: st.Version, err: err}
		s.log.Warn("snapshot not written; readers replay the log from the previous one, and the next due snapshot retries",
			zap.String("env", st.Env), zap.Uint64("version", st.Version), zap.Error(err))
	case err != nil:
		w.failing[st.Env] = snapshotFailure{version: st.Version, err: err}
	case was:
		delete(w.failing, st.Env)
		s.log.Info("snapshot written again after failures", zap.String("env", st.Env), zap.Uint64("version", st.Version),
			zap.Uint64("lastFailedVersion", f.version))
	}
}

// writeSnapshot encodes (memoized: servedRecord) and stores st's signed
// record in KV. Writes of one environment are serialised, and one older
// than what this store already wrote is skipped, so a slow background
// write cannot replace a newer snapshot (Repair's, for instance). Another
// replica may still overwrite a newer snapshot with an older one: that
// only lengthens replay.
func (s *Store) writeSnapshot(ctx context.Context, st *State) error {
	_, data, err := s.servedRecord(st)
	if err != nil {
		return err
	}
	w := &s.snapw
	w.putMu.Lock()
	if w.putLock == nil {
		w.putLock, w.written = map[string]*sync.Mutex{}, map[string]uint64{}
	}
	l := w.putLock[st.Env]
	if l == nil {
		l = &sync.Mutex{}
		w.putLock[st.Env] = l
	}
	w.putMu.Unlock()
	l.Lock()
	defer l.Unlock()
	w.putMu.Lock()
	newer := w.written[st.Env] > st.Version
	w.putMu.Unlock()
	if newer {
		return nil
	}
	if _, err := s.snaps.Put(ctx, st.Env, data); err != nil {
		return err
	}
	w.putMu.Lock()
	w.written[st.Env] = max(w.written[st.Env], st.Version)
	w.putMu.Unlock()
	return nil
}

// FlushSnapshots waits until no snapshot write is due or running (every
// one due so far was written or failed), and reports the environments
// whose latest snapshot write failed. Tests use it to see the snapshot of
// the Nth commit in KV; Close uses it on shutdown, after which no new
// writer starts. While commits keep making snapshots due it may wait for
// those too; it returns ctx's error if ctx ends first.
func (s *Store) FlushSnapshots(ctx context.Context) error {
	w := &s.snapw
	w.mu.Lock()
	idle := w.idle
	w.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("flush snapshots: %w", ctx.Err())
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for env, f := range w.failing {
		errs = append(errs, fmt.Errorf("env %s: snapshot at version %d not written (the next due snapshot retries): %w", env, f.version, f.err))
	}
	return errors.Join(errs...)
}

// Close flushes the due snapshots (FlushSnapshots) and makes later ones,
// from commits that still arrive, be written inline. Every owner of a
// Store calls it on shutdown, before closing the NATS connection, so the
// last snapshot is not lost to the connection closing under it. ctx bounds
// the wait; a write still running when it ends gives up on its own within
// snapshotWriteTimeout. Failed writes were logged when they failed; a wait
// cut short is logged here, so owners need not log the error.
func (s *Store) Close(ctx context.Context) error {
	s.snapw.mu.Lock()
	s.snapw.closed = true
	s.snapw.mu.Unlock()
	err := s.FlushSnapshots(ctx)
	if ctx.Err() != nil && err != nil {
		s.log.Warn("store closed before its due snapshots were written; readers replay the log from the previous ones", zap.Error(err))
	}
	return err
}
