// Package flagsync gets flag sets to sidecars: from a watched file (this
// file's neighbour filewatch.go) and, in remote mode, from the control plane
// over NATS with degradation to polling, disk and defaults. It produces
// evaluator snapshots into an evaluator.Holder that the proxy serves; the
// proxy sees it only through the small interfaces proxy declares.
//
// The package is named flagsync, not sync, so it never shadows the
// standard library's sync in the files that need both.
package flagsync
