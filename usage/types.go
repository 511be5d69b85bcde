// Package usage counts flag evaluations in sidecars and aggregates them in
// the control plane: per environment, flag, variant, reason, error code,
// calling app and sidecar, in minute, hour and day rollups.
package usage

import "time"

// FlagDay is one flag's evaluations on one UTC day.
type FlagDay struct {
	Day         time.Time         `json:"day"` // 00:00 UTC
	Evaluations uint64            `json:"evaluations"`
	Errors      uint64            `json:"errors"`
	Variants    map[string]uint64 `json:"variants,omitempty"` // served variant → evaluations
}

// FlagUsage is what the control plane knows about one flag's use in an
// environment. It is what lifecycle reports read.
type FlagUsage struct {
	// LastEvaluated is when a batch reporting this flag was last received
	// (zero: never, within the retention).
	LastEvaluated time.Time `json:"lastEvaluated,omitzero"`
	Last24h       uint64    `json:"last24h"`
	Last7d        uint64    `json:"last7d"`
	// Variants24h is the served-variant distribution over the last 24 h.
	Variants24h map[string]uint64 `json:"variants24h,omitempty"`
	// Days lists the last N days, oldest first (days without evaluations
	// included, with zero counts).
	Days []FlagDay `json:"days,omitempty"`
	// Apps lists the calling apps seen in the last 7 days → evaluations.
	Apps map[string]uint64 `json:"apps,omitempty"`
	// Errors24h counts the last 24 h's failed evaluations by error code.
	Errors24h map[string]uint64 `json:"errors24h,omitempty"`
}

// Reader answers usage questions; the control plane's aggregator
// implements it. days bounds FlagUsage.Days.
type Reader interface {
	FlagUsage(env string, days int) (map[string]FlagUsage, error)
}
