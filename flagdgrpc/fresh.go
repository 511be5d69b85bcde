package flagdgrpc

import (
	"context"

	"github.com/pennon-dev/pennon/evaluator"
)

// Freshness and fail modes, as the OFREP server applies them (proxy's
// evaluateFresh and bulkFresh; docs/sidecar.md, "Fail modes"). The fail-mode
// answer itself is evaluator.Snapshot.FailModeResult, shared by both
// servers; TestFailModesMatchOFREP compares the two on the same source.

// evaluateFlag answers one flag and returns the snapshot the answer came
// from (Fresh may bring a newer one).
func (s *Server) evaluateFlag(ctx context.Context, snap *evaluator.Snapshot, key string, ec *evaluator.Context) (evaluator.Result, *evaluator.Snapshot) {
	f := snap.Flag(key)
	if f == nil {
		return snap.Evaluate(key, ec), snap
	}
	if f.Propagation() == evaluator.CacheFirst || s.fresh == nil {
		return s.evalFlag(snap, f, ec), snap
	}
	fctx, cancel := context.WithTimeout(ctx, s.o.FreshTimeout)
	fresh, err := s.fresh.Fresh(fctx, f)
	cancel()
	if err != nil {
		return s.failModeResult(snap, f, ec, err), snap
	}
	if fresh == nil {
		fresh = snap
	}
	if nf := fresh.Flag(key); nf != nil {
		return s.evalFlag(fresh, nf, ec), fresh
	}
	return fresh.Evaluate(key, ec), fresh
}

// failModeResult answers as the OFREP server does (evaluator's
// FailModeResult).
func (s *Server) failModeResult(local *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context, err error) evaluator.Result {
	return local.FailModeResult(f, ec, evaluator.FailReason(err))
}

// bulkFresh establishes freshness once for a whole ResolveAll: it asks for
// the first background-refresh flag (which never blocks) and the first
// always-fresh flag under one deadline, and returns the snapshot to answer
// from and the error that puts every always-fresh flag on its fail mode.
func (s *Server) bulkFresh(ctx context.Context, snap *evaluator.Snapshot) (*evaluator.Snapshot, error) {
	if s.fresh == nil {
		return snap, nil
	}
	var always, background *evaluator.Flag
	for _, k := range snap.Keys() {
		f := snap.Flag(k)
		switch f.Propagation() {
		case evaluator.AlwaysFresh:
			if always == nil {
				always = f
			}
		case evaluator.BackgroundRefresh:
			if background == nil {
				background = f
			}
		}
	}
	if always == nil && background == nil {
		return snap, nil
	}
	fctx, cancel := context.WithTimeout(ctx, s.o.FreshTimeout)
	defer cancel()
	if background != nil {
		_, _ = s.fresh.Fresh(fctx, background)
	}
	if always == nil {
		return snap, nil
	}
	fresh, err := s.fresh.Fresh(fctx, always)
	if err != nil {
		return snap, err
	}
	if fresh != nil {
		snap = fresh
	}
	return snap, nil
}

// evalFlag evaluates f as the OFREP server would (Options.EvaluateFlag).
func (s *Server) evalFlag(snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) evaluator.Result {
	if s.o.EvaluateFlag != nil {
		return s.o.EvaluateFlag(snap, f, ec)
	}
	return snap.EvaluateFlag(f, ec)
}
