package bench

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/pennon-dev/pennon/flagdgrpc"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

// workGRPC is work for gRPC scenarios: one worker, one gRPC client
// connection (one HTTP/2 connection, so "N connections" still means N
// sockets), requests sent one at a time as in the OFREP workers.
func (p *plan) workGRPC(ctx context.Context, w int, rec *recorder) {
	cc, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		rec.record(histMin, 0, fmt.Errorf("grpc client for %s: %w", p.addr, err))
		return
	}
	defer cc.Close()
	client := evalv1.NewServiceClient(cc)
	callCtx := ctx
	if len(p.opts.Headers) > 0 {
		var kv []string
		for _, h := range p.opts.Headers {
			name, value, _ := strings.Cut(h, ":")
			kv = append(kv, strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value))
		}
		callCtx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	g := newGenerator(p.opts.Seed, w, p.opts.Scenario.poolSize())
	p.drive(ctx, rec, w, func() (int, error) {
		cctx, cancel := context.WithTimeout(callCtx, p.opts.Timeout)
		defer cancel()
		_, err := client.ResolveBoolean(cctx, p.opts.Scenario.rpc(g))
		return grpcStatus(err), err
	})
}

// grpcStatus reports a gRPC outcome as the HTTP status results are keyed
// by: 200 for OK, the nearest HTTP status for an answer the server gave,
// 0 (transport) when no answer arrived.
func grpcStatus(err error) int {
	if err == nil {
		return 200
	}
	switch grpcstatus.Code(err) {
	case codes.NotFound:
		return 404
	case codes.InvalidArgument:
		return 400
	case codes.Unavailable:
		return 503
	case codes.DeadlineExceeded, codes.Canceled:
		return 0
	default:
		return 500
	}
}

// StartPennonGRPC starts the sidecar's flagd evaluation service (package
// flagdgrpc) on a random loopback port, serving BenchFlags. Its URL is
// http://host:port (gRPC is HTTP/2 in cleartext here); load it with the
// grpc-* scenarios, and the pennon target with their OFREP twins.
func StartPennonGRPC() (*Target, error) {
	h, err := holderOf(BenchFlags)
	if err != nil {
		return nil, fmt.Errorf("pennon-grpc target: %w", err)
	}
	srv, err := flagdgrpc.New(flagdgrpc.Options{EvalAddr: "127.0.0.1:0", Source: h, SourceName: "bench"})
	if err != nil {
		return nil, fmt.Errorf("pennon-grpc target: %w", err)
	}
	if err := srv.Listen(); err != nil {
		return nil, fmt.Errorf("pennon-grpc target: %w", err)
	}
	return serveTarget("pennon-grpc", "http://"+srv.EvalAddr(), srv.Serve), nil
}
