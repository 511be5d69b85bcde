// Package delta is the wire format of usage telemetry: what a sidecar's
// evaluations counted since its previous report. It has no dependencies so
// the sidecar (package proxy, which must not import NATS) and the control
// plane's aggregator (package usage) share one definition.
package delta

import (
	"encoding/json"
	"fmt"
)

// Kind is the telemetry kind usage travels as (telemetry.KindUsage).
const Kind = "usage"

// Count is the number of evaluations of one flag that ended with one
// (variant, reason, error code). Flag is empty for keys the sidecar does
// not know (always with Code FLAG_NOT_FOUND): client-supplied keys are
// never reported.
type Count struct {
	Flag    string `json:"f"`
	Variant string `json:"v,omitempty"`
	Reason  string `json:"r,omitempty"`
	Code    string `json:"e,omitempty"`
	N       uint64 `json:"n"`
}

// AppCount is the number of evaluations of one flag requested by one
// calling app (the X-Pennon-App header; "other" past the sidecar's limit
// of distinct apps or for names it refuses).
type AppCount struct {
	App  string `json:"a"`
	Flag string `json:"f"`
	N    uint64 `json:"n"`
}

// Payload is one report. Every count is a delta: applying two payloads
// adds them.
type Payload struct {
	Counts []Count    `json:"c,omitempty"`
	Apps   []AppCount `json:"a,omitempty"`
}

// Limits on decoded payloads: a sidecar never sends more, so a payload
// over them is refused rather than letting one sender grow the control
// plane's state.
const (
	MaxEntries = 20000
	MaxString  = 256
)

// Decode reads and checks a payload.
func Decode(data []byte) (*Payload, error) {
	var p Payload
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("usage payload: %w", err)
	}
	if len(p.Counts)+len(p.Apps) > MaxEntries {
		return nil, fmt.Errorf("usage payload: %d entries, at most %d", len(p.Counts)+len(p.Apps), MaxEntries)
	}
	for i, c := range p.Counts {
		if len(c.Flag) > MaxString || len(c.Variant) > MaxString || len(c.Reason) > MaxString || len(c.Code) > MaxString {
			return nil, fmt.Errorf("usage payload: c[%d]: a field is longer than %d bytes", i, MaxString)
		}
	}
	for i, a := range p.Apps {
		if a.App == "" || len(a.App) > MaxString || len(a.Flag) > MaxString {
			return nil, fmt.Errorf("usage payload: a[%d]: app must be 1-%d bytes and flag at most %d", i, MaxString, MaxString)
		}
	}
	return &p, nil
}
