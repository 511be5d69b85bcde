package proxy

import (
	"context"

	"github.com/pennon-dev/pennon/evaluator"
)

// failModeResult answers an always-fresh flag whose freshness could not be
// established (err), as its failMode says (evaluator's FailModeResult),
// and counts it.
func (s *Server) failModeResult(local *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context, err error) evaluator.Result {
	mode := "open"
	if f.FailMode() == evaluator.FailClosed {
		mode = "closed"
	}
	s.m.failModes.WithLabelValues(mode).Inc()
	if h := s.deg.inc.hook(); h != nil {
		h.FailModeAnswer(mode == "closed")
	}
	return local.FailModeResult(f, ec, evaluator.FailReason(err))
}

// freshIndex remembers, per snapshot, the first flag of each propagation
// strategy that needs the FreshSource, so a bulk request finds out in one
// pointer comparison whether it has to ask at all.
type freshIndex struct {
	snap       *evaluator.Snapshot
	always     *evaluator.Flag // first always-fresh flag, nil if none
	background *evaluator.Flag // first background-refresh flag, nil if none
}

func (s *Server) freshFlags(snap *evaluator.Snapshot) *freshIndex {
	if fi := s.freshIdx.Load(); fi != nil && fi.snap == snap {
		return fi
	}
	fi := &freshIndex{snap: snap}
	for _, k := range snap.Keys() {
		f := snap.Flag(k)
		switch f.Propagation() {
		case evaluator.AlwaysFresh:
			if fi.always == nil {
				fi.always = f
			}
		case evaluator.BackgroundRefresh:
			if fi.background == nil {
				fi.background = f
			}
		}
	}
	s.freshIdx.Store(fi)
	return fi
}

// bulkFresh establishes freshness once for a whole bulk request, under one
// deadline (FreshTimeout), instead of once per flag: every always-fresh
// flag in the answer shares the outcome. It returns the snapshot to answer
// from (a newer one if the check brought one) and the error that puts the
// always-fresh flags on their fail mode. A background refresh is requested
// at most once; it never blocks.
func (s *Server) bulkFresh(snap *evaluator.Snapshot) (*evaluator.Snapshot, error) {
	if s.fresh == nil {
		return snap, nil
	}
	fi := s.freshFlags(snap)
	if fi.always == nil && fi.background == nil {
		return snap, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.FreshTimeout)
	defer cancel()
	if fi.background != nil {
		_, _ = s.fresh.Fresh(ctx, fi.background) // answers at once; local state serves
	}
	if fi.always == nil {
		return snap, nil
	}
	fresh, err := s.fresh.Fresh(ctx, fi.always)
	if err != nil {
		return snap, err
	}
	if fresh != nil {
		snap = fresh
	}
	return snap, nil
}
