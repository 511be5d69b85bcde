package proxy

// CONTRACT: how the sidecar server gets flags. proxy never imports NATS; the
// sync client (or a file watcher, or a test) implements these.

import (
	"context"

	"github.com/pennon-dev/pennon/evaluator"
)

// Source supplies the snapshot to serve. *evaluator.Holder implements it.
type Source interface {
	// Current returns the snapshot to serve, or nil before the first load.
	// It must be lock-free: it is called on every request.
	Current() *evaluator.Snapshot
	// Changed returns a channel closed when Current next changes.
	Changed() <-chan struct{}
}

// FreshSource is implemented by sources that can vouch for freshness (the
// sync client). The server calls Fresh for flags whose propagation is not
// cache-first, before evaluating them.
type FreshSource interface {
	// Fresh returns the snapshot to evaluate flag f against. For always-fresh
	// flags it returns the local snapshot only under a valid freshness lease
	// and otherwise asks the control plane, bounded by ctx; an error means
	// freshness could not be established and f's failMode applies (the
	// server then answers with a value, see failModeResult). It is called on
	// the request path, concurrently: implementations must coalesce checks so
	// their load on the control plane is bounded by time, not by traffic.
	// For background-refresh flags it returns the local snapshot at once and
	// starts a refresh when the local copy is older than the flag's TTL.
	// A bulk request calls it once per strategy with the first such flag,
	// and every flag of that strategy shares the outcome.
	Fresh(ctx context.Context, f *evaluator.Flag) (*evaluator.Snapshot, error)
}

// StatusSource is implemented by sources with something to say in
// /v1/status and /readyz (sync state, degradation, last error).
type StatusSource interface {
	// Status is marshalled as the "sync" member of /v1/status.
	Status() any
	// Ready reports whether the source considers itself ready to serve, with
	// a short human-readable detail for /readyz.
	Ready() (ok bool, detail string)
}
