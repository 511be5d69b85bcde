package evaluator

import (
	"context"
	"encoding/json"
	"errors"
)

// maxFailReason bounds pennonFailReason: metadata is for a human and for
// telemetry, not for a whole error chain.
const maxFailReason = 200

// FailReason is the short pennonFailReason for the error that kept a
// sidecar from establishing freshness.
func FailReason(err error) string {
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "freshness check timed out: " + msg
	}
	if len(msg) > maxFailReason {
		msg = msg[:maxFailReason] + "…"
	}
	return msg
}

// FailModeResult answers an always-fresh flag f whose freshness could not
// be established, as its failMode says. Both modes answer with a value: an
// error answer has none, and the application would fall back to its code
// default — a decision the flag's owner did not make.
//
//   - closed: the safeVariant (SafeResult), metadata pennonFailMode
//     "closed" and pennonFailReason.
//   - open: the last known answer from s, reason STALE, metadata
//     pennonStale true, pennonFailMode "open", pennonFailReason. A last
//     known answer that is itself an error stays that error.
//
// The OFREP server and flagd's gRPC services both answer through it, so
// the two protocols cannot disagree. It allocates: it serves the degraded
// path, not the hot one.
func (s *Snapshot) FailModeResult(f *Flag, ctx *Context, why string) Result {
	if f.FailMode() == FailClosed {
		return f.SafeResult(why)
	}
	r := s.EvaluateFlag(f, ctx)
	if r.ErrorCode != CodeNone {
		return r
	}
	md := make(map[string]any, len(r.Metadata)+3)
	for k, v := range r.Metadata {
		md[k] = v
	}
	md["pennonStale"] = true
	md["pennonFailMode"] = "open"
	md["pennonFailReason"] = why
	b, err := json.Marshal(md)
	if err != nil { // metadata came from JSON: cannot fail, but never emit a broken body
		b = []byte(`{"pennonStale":true,"pennonFailMode":"open"}`)
	}
	r.Reason, r.Metadata, r.MetadataJSON = ReasonStale, md, b
	return r
}
