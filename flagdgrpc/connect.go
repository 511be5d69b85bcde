package flagdgrpc

import (
	"context"
	"errors"
	"io"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
)

// The services are served with connect-go, as flagd serves them: one port
// speaks gRPC (HTTP/2: the Java, JavaScript, .NET, Python, Rust and PHP
// providers), gRPC-Web, and the Connect protocol over HTTP/1.1 (flagd's Go
// provider in RPC mode). The service logic is written against the
// grpc-go-generated interfaces (evalService, syncService); the adapters
// below carry calls and errors between the two, count them in the metrics
// and turn a handler panic into an Internal error for that call.

// connectEval adapts evalService to the connect handler interface.
type connectEval struct {
	s *Server
	e *evalService
}

// connectSync adapts syncService to the connect handler interface.
type connectSync struct {
	s *Server
	y *syncService
}

// unary runs one unary call: metrics, panic recovery, error conversion.
func unary[Res any](s *Server, method string, call func() (*Res, error)) (resp *connect.Response[Res], err error) {
	start := time.Now()
	var callErr error // the grpc status, for the metrics' code label
	defer func() {
		if p := recover(); p != nil {
			callErr = s.panicked(method, p)
			resp, err = nil, toConnect(callErr)
		}
		s.m.unary(method, start, callErr)
	}()
	r, callErr := call()
	if callErr != nil {
		return nil, toConnect(callErr)
	}
	return connect.NewResponse(r), nil
}

// stream runs one server stream: open-stream gauge, metrics, recovery.
func stream(s *Server, method string, run func() error) (err error) {
	open := s.m.streams.WithLabelValues(method)
	open.Inc()
	var callErr error
	defer func() {
		if p := recover(); p != nil {
			callErr = s.panicked(method, p)
			err = toConnect(callErr)
		}
		open.Dec()
		s.m.requests.WithLabelValues(method, status.Code(callErr).String()).Inc()
	}()
	callErr = run()
	return toConnect(callErr)
}

func (s *Server) panicked(method string, p any) error {
	s.log.Error("gRPC handler panic", zap.String("method", method), zap.Any("panic", p))
	return status.Error(codes.Internal, "internal error")
}

// toConnect carries a grpc status (code and message) into a connect error;
// connect's codes are gRPC's, number for number.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	}
	return err
}

func (c *connectEval) ResolveAll(ctx context.Context, r *connect.Request[evalv1.ResolveAllRequest]) (*connect.Response[evalv1.ResolveAllResponse], error) {
	return unary(c.s, "ResolveAll", func() (*evalv1.ResolveAllResponse, error) { return c.e.ResolveAll(ctx, r.Msg) })
}

func (c *connectEval) ResolveBoolean(ctx context.Context, r *connect.Request[evalv1.ResolveBooleanRequest]) (*connect.Response[evalv1.ResolveBooleanResponse], error) {
	return unary(c.s, "ResolveBoolean", func() (*evalv1.ResolveBooleanResponse, error) { return c.e.ResolveBoolean(ctx, r.Msg) })
}

func (c *connectEval) ResolveString(ctx context.Context, r *connect.Request[evalv1.ResolveStringRequest]) (*connect.Response[evalv1.ResolveStringResponse], error) {
	return unary(c.s, "ResolveString", func() (*evalv1.ResolveStringResponse, error) { return c.e.ResolveString(ctx, r.Msg) })
}

func (c *connectEval) ResolveFloat(ctx context.Context, r *connect.Request[evalv1.ResolveFloatRequest]) (*connect.Response[evalv1.ResolveFloatResponse], error) {
	return unary(c.s, "ResolveFloat", func() (*evalv1.ResolveFloatResponse, error) { return c.e.ResolveFloat(ctx, r.Msg) })
}

func (c *connectEval) ResolveInt(ctx context.Context, r *connect.Request[evalv1.ResolveIntRequest]) (*connect.Response[evalv1.ResolveIntResponse], error) {
	return unary(c.s, "ResolveInt", func() (*evalv1.ResolveIntResponse, error) { return c.e.ResolveInt(ctx, r.Msg) })
}

func (c *connectEval) ResolveObject(ctx context.Context, r *connect.Request[evalv1.ResolveObjectRequest]) (*connect.Response[evalv1.ResolveObjectResponse], error) {
	return unary(c.s, "ResolveObject", func() (*evalv1.ResolveObjectResponse, error) { return c.e.ResolveObject(ctx, r.Msg) })
}

func (c *connectEval) EventStream(ctx context.Context, r *connect.Request[evalv1.EventStreamRequest], out *connect.ServerStream[evalv1.EventStreamResponse]) error {
	return stream(c.s, "EventStream", func() error {
		return c.e.EventStream(r.Msg, &serverStream[evalv1.EventStreamResponse]{ctx: ctx, out: out})
	})
}

func (c *connectSync) SyncFlags(ctx context.Context, r *connect.Request[syncv1.SyncFlagsRequest], out *connect.ServerStream[syncv1.SyncFlagsResponse]) error {
	return stream(c.s, "SyncFlags", func() error {
		return c.y.SyncFlags(r.Msg, &serverStream[syncv1.SyncFlagsResponse]{ctx: ctx, out: out})
	})
}

func (c *connectSync) FetchAllFlags(ctx context.Context, r *connect.Request[syncv1.FetchAllFlagsRequest]) (*connect.Response[syncv1.FetchAllFlagsResponse], error) {
	return unary(c.s, "FetchAllFlags", func() (*syncv1.FetchAllFlagsResponse, error) { return c.y.FetchAllFlags(ctx, r.Msg) })
}

func (c *connectSync) GetMetadata(ctx context.Context, r *connect.Request[syncv1.GetMetadataRequest]) (*connect.Response[syncv1.GetMetadataResponse], error) {
	return unary(c.s, "GetMetadata", func() (*syncv1.GetMetadataResponse, error) { return c.y.GetMetadata(ctx, r.Msg) })
}

// serverStream presents a connect server stream as the grpc-go stream the
// service logic sends on. Only Send and Context are used.
type serverStream[T any] struct {
	ctx context.Context
	out *connect.ServerStream[T]
}

var _ grpc.ServerStreamingServer[evalv1.EventStreamResponse] = (*serverStream[evalv1.EventStreamResponse])(nil)

func (s *serverStream[T]) Send(m *T) error              { return s.out.Send(m) }
func (s *serverStream[T]) Context() context.Context     { return s.ctx }
func (s *serverStream[T]) SetHeader(metadata.MD) error  { return nil }
func (s *serverStream[T]) SendHeader(metadata.MD) error { return nil }
func (s *serverStream[T]) SetTrailer(metadata.MD)       {}
func (s *serverStream[T]) RecvMsg(any) error            { return io.EOF }
func (s *serverStream[T]) SendMsg(m any) error {
	if t, ok := m.(*T); ok {
		return s.out.Send(t)
	}
	return status.Error(codes.Internal, "unexpected message type on a server stream")
}
