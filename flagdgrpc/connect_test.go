package flagdgrpc

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	"github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1/evaluationv1connect"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
	"github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1/syncv1connect"
)

// TestConnectProtocol: flagd's Go provider in RPC mode speaks the Connect
// protocol over HTTP/1.1, not gRPC; the services answer it on the same
// port as gRPC, with the same values and error codes. gRPC-Web rides on
// the same handlers.
func TestConnectProtocol(t *testing.T) {
	c := start(t, Options{Source: newDocHolder(t, testFlags)})
	hc := &http.Client{Transport: &http.Transport{}} // HTTP/1.1, as the Go provider's client
	defer hc.CloseIdleConnections()
	for _, proto := range []struct {
		name string
		opts []connect.ClientOption
	}{{"connect", nil}, {"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}}} {
		t.Run(proto.name, func(t *testing.T) {
			eval := evaluationv1connect.NewServiceClient(hc, "http://"+c.srv.EvalAddr(), proto.opts...)
			ctx := ctxStruct(t, map[string]any{"plan": "premium"})
			r, err := eval.ResolveString(callCtx(t), connect.NewRequest(&evalv1.ResolveStringRequest{FlagKey: "color", Context: ctx}))
			if err != nil {
				t.Fatal(err)
			}
			if r.Msg.GetValue() != "red" || r.Msg.GetReason() != "TARGETING_MATCH" || r.Msg.GetVariant() != "red" || r.Msg.GetMetadata().AsMap()["kind"] != "ui" {
				t.Fatalf("ResolveString: %v", r.Msg)
			}
			_, err = eval.ResolveBoolean(callCtx(t), connect.NewRequest(&evalv1.ResolveBooleanRequest{FlagKey: "nope"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("nope: %v, want NotFound", err)
			}
			d, err := eval.ResolveBoolean(callCtx(t), connect.NewRequest(&evalv1.ResolveBooleanRequest{FlagKey: "disabled"}))
			if err != nil || d.Msg.Value != nil || d.Msg.GetReason() != "DISABLED" {
				t.Fatalf("disabled: %v %v, want no value and reason DISABLED", d, err)
			}
			f, err := eval.ResolveBoolean(callCtx(t), connect.NewRequest(&evalv1.ResolveBooleanRequest{FlagKey: "static-off"}))
			if err != nil || f.Msg.Value == nil || *f.Msg.Value || f.Msg.GetVariant() != "off" {
				t.Fatalf("static-off: %v %v, want an explicit false", f, err)
			}
			_, err = eval.ResolveBoolean(callCtx(t), connect.NewRequest(&evalv1.ResolveBooleanRequest{FlagKey: "color"}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("type mismatch: %v", err)
			}

			sctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			events, err := eval.EventStream(sctx, connect.NewRequest(&evalv1.EventStreamRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if !events.Receive() || events.Msg().GetType() != "provider_ready" {
				t.Fatalf("first event: %v %v", events.Msg(), events.Err())
			}
			cancel()
			events.Close()

			sync := syncv1connect.NewFlagSyncServiceClient(hc, "http://"+c.srv.SyncAddr(), proto.opts...)
			all, err := sync.FetchAllFlags(callCtx(t), connect.NewRequest(&syncv1.FetchAllFlagsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			checkFlagdShape(t, all.Msg.GetFlagConfiguration())
			flags, err := sync.SyncFlags(streamCtx(t), connect.NewRequest(&syncv1.SyncFlagsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if !flags.Receive() || flags.Msg().GetFlagConfiguration() != all.Msg.GetFlagConfiguration() {
				t.Fatalf("SyncFlags: %v %v", flags.Msg(), flags.Err())
			}
			flags.Close()
		})
	}
}

// streamCtx is a stream context cancelled when the test ends.
func streamCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
