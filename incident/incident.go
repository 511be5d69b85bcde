// Package incident records the degradations pennon goes through — a
// sidecar losing push and falling down the ladder (polling, disk copy,
// secure defaults), its circuit breaker opening, always-fresh flags
// answered on their failMode, targeting served by its fallback, the
// response cache stepped aside, signed input rejected; the control plane
// losing NATS or its store — as incident records: when each began and
// ended, the conditions at the time, which fallbacks fired and how many
// answers each served, and whether recovery worked.
//
// The point is learning from failures: a log line says that something
// happened, a record says what it cost and how it ended. A sidecar's
// Recorder (recorder.go) is a telemetry.Source of kind "incidents"; the
// control plane's Ledger (package incident/ledger) follows what sidecars
// ship, keeps the latest state of each record and lists them.
//
// This package imports neither NATS nor the proxy or sync packages: they
// reach the Recorder through small hook interfaces of their own
// (proxy.IncidentHook, flagsync.IncidentHook), which it implements.
package incident

import (
	"fmt"
	"strings"
	"time"
)

// Kinds of incidents.
const (
	// KindPushLost: a sidecar meant to be pushed to left push (or never
	// reached it): it polls, or serves its disk copy or the secure defaults.
	// The rungs it went through are its fallbacks.
	KindPushLost = "push_lost"
	// KindControlPlaneLost: a polling-only sidecar (no NATS configured)
	// could not reach the control plane and serves its disk copy or the
	// secure defaults.
	KindControlPlaneLost = "control_plane_lost"
	// KindBreakerOpen: the circuit breaker guarding calls to the control
	// plane opened after consecutive failures.
	KindBreakerOpen = "breaker_open"
	// KindFailMode: always-fresh flags were answered on their failMode
	// (closed: the safe variant; open: the last known value).
	KindFailMode = "fail_mode"
	// KindTargetingFallback: flags were served by their fallbackTargeting
	// (full rule over budget, or the sidecar overloaded).
	KindTargetingFallback = "targeting_fallback"
	// KindCacheBypass: the response cache was stepped aside.
	KindCacheBypass = "cache_bypass"
	// KindSignatureRejected: signed input (changesets, snapshots,
	// heartbeats, the disk copy) failed verification and was not served.
	KindSignatureRejected = "signature_rejected"
	// KindNATSDisconnected: the control plane lost its NATS connection.
	KindNATSDisconnected = "nats_disconnected"
	// KindStoreUnavailable: the control plane is connected to NATS but
	// JetStream (its store) does not answer.
	KindStoreUnavailable = "store_unavailable"
)

// Statuses of a record.
const (
	StatusOpen = "open"
	// StatusRecovered: the degradation ended by itself (push came back,
	// the breaker closed, fallback answers stopped).
	StatusRecovered = "recovered"
	// StatusSuperseded: the process that held the record open stopped (a
	// new boot of the same sidecar or control plane reported since): how
	// it would have ended is unknown.
	StatusSuperseded = "superseded"
)

// Names of fallbacks.
const (
	FallbackPolling           = "polling"
	FallbackDisk              = "disk"
	FallbackDefaults          = "defaults"
	FallbackFailClosed        = "fail-closed"
	FallbackFailOpen          = "fail-open"
	FallbackTargetingCost     = "fallback-targeting (cost)"
	FallbackTargetingOverload = "fallback-targeting (overload)"
	FallbackCacheBypass       = "cache-bypass"
)

// Record is one incident. (ID, Rev) identify a state of it: a sidecar
// re-sends an open record each time it changes with a higher Rev, and the
// control plane keeps the highest.
type Record struct {
	ID string `json:"id"`
	// Rev grows with every change of the record.
	Rev  uint64 `json:"rev"`
	Kind string `json:"kind"`
	// Env is the environment of the sidecar; empty for the control
	// plane's own incidents.
	Env string `json:"env,omitempty"`
	// Source is the sidecar's ID, or "control-plane/<host>".
	Source string `json:"source"`
	// Boot identifies the process: records of an earlier boot still open
	// when a later one reports are superseded.
	Boot   string     `json:"boot"`
	Status string     `json:"status"`
	Start  time.Time  `json:"start"`
	End    *time.Time `json:"end,omitempty"`
	// Recovered is true when the record was closed by recovery.
	Recovered bool `json:"recovered"`
	// Reason is why it began, as the component said it.
	Reason string `json:"reason,omitempty"`
	// Detail adds what is specific to the kind (flags affected, the
	// rejected input, the breaker's error).
	Detail []string `json:"detail,omitempty"`
	// Count is how many times the thing happened (rejected inputs, failed
	// calls while the breaker was open); 0 when not counted.
	Count uint64 `json:"count,omitempty"`
	// AtStart are the conditions when it began, Latest the most recent
	// ones (at the end for a closed record).
	AtStart Conditions  `json:"atStart"`
	Latest  *Conditions `json:"latest,omitempty"`
	// Fallbacks lists what served answers instead of the normal path,
	// in the order they fired.
	Fallbacks []Fallback `json:"fallbacks"`
	Updated   time.Time  `json:"updated"`
	// Seq is the control plane's telemetry stream sequence the record was
	// last updated from (0 for the control plane's own records).
	Seq uint64 `json:"seq,omitempty"`
}

// Fallback is one fallback that fired during an incident.
type Fallback struct {
	Name string `json:"name"`
	// Since is when it first fired in this incident.
	Since time.Time `json:"since"`
	// Answers served by it during the incident.
	Answers uint64 `json:"answers"`
}

// Conditions are what was happening when a record began or changed.
type Conditions struct {
	At time.Time `json:"at"`
	// Load: OFREP requests being served, and requests per second and the
	// share of them that failed over the last measured interval.
	InFlight  int64   `json:"inFlight"`
	RPS       float64 `json:"requestsPerSecond"`
	ErrorRate float64 `json:"errorRate"`
	// What was served: the flag set's identity and the sync state.
	Version uint64 `json:"version"`
	Hash    string `json:"hash,omitempty"`
	State   string `json:"state,omitempty"`
	NATS    bool   `json:"natsConnected"`
	Breaker string `json:"breaker,omitempty"`
	// LagSeconds is how long since the sidecar last confirmed it served
	// the control plane's current flag set (0: confirmed just now, or
	// never: see State).
	LagSeconds float64 `json:"lagSeconds"`
}

// Payload is the JSON of one incidents telemetry batch.
type Payload struct {
	// Boot identifies the sending process. A Recorder's first payload is
	// sent even without records, so the control plane learns of a new
	// boot and supersedes what the previous one left open.
	Boot    string   `json:"boot"`
	Records []Record `json:"records"`
}

// Closed reports whether r has ended.
func (r *Record) Closed() bool { return r.Status != StatusOpen }

// Summary is one line for people: when, where, what, how it ended and
// what served meanwhile.
func (r *Record) Summary(now time.Time) string {
	var b strings.Builder
	b.WriteString(r.Kind)
	if r.Reason != "" {
		b.WriteString(" (" + r.Reason + ")")
	}
	switch r.Status {
	case StatusOpen:
		fmt.Fprintf(&b, ": open for %s", roundDur(now.Sub(r.Start)))
	case StatusRecovered:
		fmt.Fprintf(&b, ": recovered after %s", roundDur(r.duration()))
	default:
		fmt.Fprintf(&b, ": %s after %s", r.Status, roundDur(r.duration()))
	}
	if r.Count > 0 {
		switch r.Kind {
		case KindBreakerOpen:
			fmt.Fprintf(&b, "; %d failed calls", r.Count)
		case KindSignatureRejected:
			fmt.Fprintf(&b, "; %d inputs rejected", r.Count)
		default:
			fmt.Fprintf(&b, "; %d times", r.Count)
		}
	}
	if len(r.Fallbacks) > 0 {
		parts := make([]string, len(r.Fallbacks))
		for i, f := range r.Fallbacks {
			parts[i] = fmt.Sprintf("%s %d", f.Name, f.Answers)
		}
		b.WriteString("; served: " + strings.Join(parts, ", "))
	}
	if r.AtStart.Version > 0 {
		fmt.Fprintf(&b, "; v%d", r.AtStart.Version)
	}
	return b.String()
}

func (r *Record) duration() time.Duration {
	if r.End == nil {
		return 0
	}
	return r.End.Sub(r.Start)
}

// roundDur keeps durations readable: seconds under an hour, minutes above.
func roundDur(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d >= time.Hour {
		return d.Round(time.Minute)
	}
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// Newer reports whether r is a later state of the same incident than old.
func (r *Record) Newer(old *Record) bool {
	return old == nil || r.Rev > old.Rev
}
