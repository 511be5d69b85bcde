package flagdgrpc

import (
	"context"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/evaluator"
)

// state is one served flag set as the streams see it. It is immutable;
// the watcher replaces it and closes changed, so a stream waits on the
// state it last sent and then diffs against the newest (a slow stream
// skips intermediate sets but never misses a changed flag).
type state struct {
	snap    *evaluator.Snapshot
	set     *flagSet // flagd form; nil without a document
	changed chan struct{}
}

func (st *state) keys() []string {
	if st == nil || st.snap == nil {
		return nil
	}
	return st.snap.Keys()
}

func (s *Server) current() *state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *Server) setState(next *state) {
	s.mu.Lock()
	prev := s.st
	s.st = next
	s.mu.Unlock()
	if prev != nil {
		close(prev.changed)
	}
}

// buildState reads the current snapshot (and document, for the sync
// service). When the document cannot be converted the previous flagd form
// is kept, so in-process providers keep their last good set.
func (s *Server) buildState(prev *state) *state {
	st := &state{changed: make(chan struct{})}
	if s.o.Documents == nil {
		st.snap = s.o.Source.Current()
		return st
	}
	snap, doc := s.o.Documents.CurrentDocument()
	st.snap = snap
	if doc != nil {
		fs, err := buildFlagSet(doc)
		if err == nil {
			st.set = fs
			return st
		}
		s.log.Error("flag set not converted to flagd's format; sync clients keep the previous set", zap.Error(err))
	}
	if prev != nil {
		st.set = prev.set
	}
	return st
}

// watch follows the source and publishes a new state for every snapshot.
func (s *Server) watch(ctx context.Context) {
	for {
		ch := s.o.Source.Changed()
		if cur := s.current(); cur.snap != s.o.Source.Current() {
			next := s.buildState(cur)
			s.setState(next)
			if next.snap != nil {
				s.log.Debug("flagd services follow a new flag set", zap.Uint64("version", next.snap.Version()))
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}
