package flagsync

import (
	"github.com/pennon-dev/pennon/incident"
)

// IncidentHook hears about a sidecar's degradations as they happen, so
// they become incident records (incident.Recorder implements it). Its
// calls may run under the Remote's lock: an implementation must not call
// back into the Remote and must not block.
type IncidentHook interface {
	// SyncChanged: the sync state moved from one rung of the ladder to
	// another, with the conditions at that moment.
	SyncChanged(from, to, why string, c incident.SyncConditions)
	// BreakerChanged: the breaker guarding calls to the control plane
	// opened or closed.
	BreakerChanged(open bool, failures int, err error)
	// Rejected: an input failed verification and was not served.
	Rejected(kind, why string, version uint64)
}

type incidentBox struct{ h IncidentHook }

// SetIncidents attaches h; it may be called while the Remote runs (the
// sidecar builds its recorder after sync started). A state already
// degraded when h arrives is told to it at once, so a sidecar that started
// without push still opens a record.
func (r *Remote) SetIncidents(h IncidentHook) {
	if h == nil {
		return
	}
	r.inc.Store(&incidentBox{h: h})
	f := h.BreakerChanged
	r.breaker.onChange.Store(&f)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != StateStarting {
		h.SyncChanged(StateStarting, r.state, "state when incident recording began", r.incidentConditionsLocked())
	}
}

// incidents is the attached hook, nil when none.
func (r *Remote) incidents() IncidentHook {
	if b := r.inc.Load(); b != nil {
		return b.h
	}
	return nil
}

// noteStateLocked tells the hook about a state change.
func (r *Remote) noteStateLocked(from, to, why string) {
	if h := r.incidents(); h != nil {
		h.SyncChanged(from, to, why, r.incidentConditionsLocked())
	}
}

// IncidentConditions is what the sidecar serves and how it is synced, for
// incident records (incident.RecorderOptions.Sync).
func (r *Remote) IncidentConditions() incident.SyncConditions {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.incidentConditionsLocked()
}

func (r *Remote) incidentConditionsLocked() incident.SyncConditions {
	c := incident.SyncConditions{State: r.state, NATS: r.natsUp, Breaker: r.breaker.State(), LastSync: r.lastSync}
	if r.rec != nil {
		c.Version, c.Hash = r.rec.Version, r.rec.Hash
	}
	return c
}

// PushConfigured reports whether this sidecar is meant to be pushed to
// (NATS configured): then polling is a degradation, else the normal mode.
func (r *Remote) PushConfigured() bool { return r.o.NATSURL != "" }
