package proxy

import (
	"sync/atomic"

	"github.com/pennon-dev/pennon/incident"
)

// IncidentHook hears about the sidecar's degradations in the answer path,
// so they become incident records (incident.Recorder implements it). The
// per-answer calls (FailModeAnswer, FallbackAnswer, BypassedAnswer) run on
// every such answer and must cost no more than an atomic add; the
// transition calls run once per change.
type IncidentHook interface {
	// FailModeAnswer: an always-fresh flag was answered on its failMode.
	FailModeAnswer(closed bool)
	// FallbackAnswer: a flag was answered by its fallbackTargeting.
	FallbackAnswer(overload bool)
	// TargetingChanged: flag moved to its fallback (reason cost or
	// overload) or back to its full rule.
	TargetingChanged(flag, reason string, degraded bool)
	// CacheBypass: the response cache was stepped aside (why) or is back.
	CacheBypass(on bool, why string)
	// BypassedAnswer: an answer was evaluated because the cache is aside.
	BypassedAnswer()
}

type incidentBox struct{ h IncidentHook }

// incidentSlot holds the hook; a nil slot or an empty one reports nothing.
type incidentSlot struct{ p atomic.Pointer[incidentBox] }

func (s *incidentSlot) hook() IncidentHook {
	if s == nil {
		return nil
	}
	if b := s.p.Load(); b != nil {
		return b.h
	}
	return nil
}

// SetIncidents attaches h (nil detaches); safe while serving.
func (s *Server) SetIncidents(h IncidentHook) {
	var b *incidentBox
	if h != nil {
		b = &incidentBox{h: h}
	}
	s.deg.inc.p.Store(b)
	if s.guard != nil {
		s.guard.inc.p.Store(b)
	}
}

// IncidentLoad is the sidecar's load for incident records: OFREP requests
// in flight and answered since start. Two atomic loads: the recorder may
// call it from any hook.
func (s *Server) IncidentLoad() incident.Load {
	return incident.Load{InFlight: s.deg.inFlight.Load(), Requests: s.deg.answered.Load()}
}

// IncidentErrors is the number of failed evaluations and rejected OFREP
// requests since start. It gathers the metrics registry, so it is meant
// for the recorder's interval (RecorderOptions.Errors), not for hooks.
func (s *Server) IncidentErrors() uint64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == "pennon_evaluation_errors_total" {
			for _, m := range mf.GetMetric() {
				n += uint64(m.GetCounter().GetValue())
			}
		}
	}
	return n
}
