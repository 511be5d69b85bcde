package proxy

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/pennon-dev/pennon/evaluator"
)

// reasonStale is OpenFeature's STALE reason: "the resolved value is
// non-authoritative or possibly out of date". Both fail modes answer with
// it (see docs/sidecar.md, "Fail modes"): the value is real and chosen by
// the flag's owner, but the sidecar could not vouch that it is current.
const reasonStale = evaluator.ReasonStale

// maxFailReason bounds pennonFailReason: metadata is for a human and for
// telemetry, not for a whole error chain.
const maxFailReason = 200

// failModeResult answers an always-fresh flag whose freshness could not be
// established (err), as its failMode says. Both modes answer with a value:
// an OFREP error answer has none, and the app would fall back to its code
// default — a decision the flag's owner did not make.
//
//   - closed: the safeVariant (evaluator.Flag.SafeResult), metadata
//     pennonFailMode "closed" and pennonFailReason.
//   - open: the last known answer from the local snapshot, reason STALE,
//     metadata pennonStale true, pennonFailMode "open", pennonFailReason. A
//     local answer that is itself an error stays that error.
func (s *Server) failModeResult(local *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context, err error) evaluator.Result {
	why := failReason(err)
	if f.FailMode() == evaluator.FailClosed {
		s.m.failModes.WithLabelValues("closed").Inc()
		return f.SafeResult(why)
	}
	s.m.failModes.WithLabelValues("open").Inc()
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
	if merr != nil { // metadata came from JSON: cannot fail, but never emit a broken body
		b = []byte(`{"pennonStale":true,"pennonFailMode":"open"}`)
	}
	r.Reason, r.Metadata, r.MetadataJSON = reasonStale, md, b
	return r
}

// failReason is the short pennonFailReason for err.
func failReason(err error) string {
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "freshness check timed out: " + msg
	}
	return truncate(msg, maxFailReason)
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
