// Package bench is pennon's load generator: it speaks OFREP over HTTP to any
// target (a pennon sidecar, flagd, GO Feature Flag's relay proxy, or the bare
// fasthttp ceiling started in-process), in closed loop (N connections as fast
// as they go) or open loop (a fixed request rate whose latencies are measured
// from each request's intended send time, so a stalled server cannot hide its
// stall by slowing the load down: coordinated omission).
//
// It records latencies in HDR histograms and renders results as a terminal
// table, JSON and PNG plots. It must not import the packages it measures
// except to start in-process targets, and it never sends load to a
// non-loopback address unless the caller says so explicitly.
package bench
