// Package notify turns what happens in pennon (changes, approvals needed,
// anomalies, lifecycle findings, incidents, unexpected state changes) into
// events, and delivers them to each environment's webhooks.
package notify

import (
	"context"
	"time"
)

// Types of events.
const (
	TypeChange         = "change"          // a changeset was committed
	TypeApprovalNeeded = "approval_needed" // a change request waits for review
	TypeEmergency      = "emergency"       // an emergency change bypassed review
	TypeOutOfHours     = "out_of_hours"    // a change outside configured business hours
	TypeRewind         = "rewind"          // a sidecar converged to a lower version
	TypeAnomaly        = "anomaly"         // a flag's served distribution shifted without a change
	TypeLifecycle      = "lifecycle"       // a lifecycle finding (expired, unused, settled, ...)
	TypeIncident       = "incident"        // a degradation opened or closed
)

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Event is one thing worth telling people about.
type Event struct {
	// ID is unique per event and stable across retries of its delivery;
	// producers that may emit the same event twice (several control-plane
	// replicas) derive it from the event's content so receivers can
	// de-duplicate. Empty: the emitter assigns one.
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Env      string    `json:"env"`
	Time     time.Time `json:"time"`
	Severity string    `json:"severity"`
	// Title is one line for people ("checkout-v2: distribution shifted
	// without a change"); Text may add a few more.
	Title string `json:"title"`
	Text  string `json:"text,omitempty"`
	Flag  string `json:"flag,omitempty"`
	// Data carries the type's details (version, author, p-value, ...).
	Data map[string]any `json:"data,omitempty"`
}

// Emitter accepts events. Emit never blocks on delivery (webhooks are sent
// in the background) and never fails the caller's operation.
type Emitter interface {
	Emit(ctx context.Context, e Event)
}

// Discard is an Emitter that drops every event.
var Discard Emitter = discard{}

type discard struct{}

func (discard) Emit(context.Context, Event) {}
