// Package flagdgrpc serves flagd's gRPC protocols from the sidecar, so apps
// built on OpenFeature's flagd providers can move to pennon without code
// changes:
//
//   - the evaluation service (flagd.evaluation.v1, flagd's port 8013) for
//     providers in RPC mode: the sidecar evaluates, exactly as it does for
//     OFREP (same snapshot, same context decoding, same freshness rules);
//   - the sync service (flagd.sync.v1, flagd's port 8015) for providers in
//     in-process mode: the sidecar streams the whole flag set in flagd's JSON
//     format and the provider evaluates it inside the app.
//
// It reads flags only through proxy's small Source interfaces and, for the
// sync service, a DocumentSource; it never imports NATS or the sync client.
// Protocol details follow flagd (open-feature/flagd,
// core/pkg/service/flag-evaluation and core/pkg/service/sync): error codes
// map to the gRPC status codes flagd uses, events carry flagd's type names.
// Like flagd's, each port speaks gRPC, gRPC-Web and the Connect protocol
// (connect-go; see connect.go).
package flagdgrpc
