package flagdgrpc

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/pennon-dev/pennon/evaluator"
)

// Freshness and fail modes, as the OFREP server applies them (proxy's
// evaluateFresh, failModeResult and bulkFresh; docs/sidecar.md, "Fail
// modes"). proxy keeps them unexported, so they are restated here;
// TestFailModesMatchOFREP compares the two servers on the same source so
// the copies cannot drift apart unnoticed.

// reasonStale is OpenFeature's STALE: the value is real but the sidecar
// could not vouch that it is current.
const reasonStale = evaluator.ReasonStale

// maxFailReason bounds pennonFailReason, as proxy does.
const maxFailReason = 200

// evaluateFlag answers one flag and returns the snapshot the answer came
// from (Fresh may bring a newer one).
func (s *Server) evaluateFlag(ctx context.Context, snap *evaluator.Snapshot, key string, ec *evaluator.Context) (evaluator.Result, *evaluator.Snapshot) {
	f := snap.Flag(key)
	if f == nil {
		return snap.Evaluate(key, ec), snap
	}
	if f.Propagation() == evaluator.CacheFirst || s.fresh == nil {
		return snap.EvaluateFlag(f, ec), snap
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
		return fresh.EvaluateFlag(nf, ec), fresh
	}
	return fresh.Evaluate(key, ec), fresh
}

// failModeResult answers an always-fresh flag whose freshness could not be
// established: closed serves the safe variant (Flag.SafeResult); open the
// last known answer with reason STALE and metadata pennonStale,
// pennonFailMode, pennonFailReason. Both carry a value; an error stays an
// error.
func (s *Server) failModeResult(local *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context, err error) evaluator.Result {
	why := failReason(err)
	if f.FailMode() == evaluator.FailClosed {
		return f.SafeResult(why)
	}
	r := local.EvaluateFlag(f, ec)
	if r.ErrorCode != evaluator.CodeNone {
		return r
	}
	md := make(map[string]any, len(r.Metadata)+3)
	for k, v := range r.Metadata {
		md[k] = v
	}
	md["pennonStale"] = true
	md["pennonFailMode"] = "open"
	md["pennonFailReason"] = why
	b, merr := json.Marshal(md)
	if merr != nil {
		b = []byte(`{"pennonStale":true,"pennonFailMode":"open"}`)
	}
	r.Reason, r.Metadata, r.MetadataJSON = reasonStale, md, b
	return r
}

func failReason(err error) string {
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "freshness check timed out: " + msg
	}
	if len(msg) > maxFailReason {
		msg = msg[:maxFailReason] + "…"
	}
	return msg
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
