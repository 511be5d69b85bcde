package flagdgrpc

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pennon-dev/pennon/evaluator"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

// evalService is flagd.evaluation.v1.Service over the sidecar's snapshots.
type evalService struct {
	evalv1.UnimplementedServiceServer
	s *Server
}

// flagd's error message prefix (flag-evaluation's ErrorPrefix); providers
// branch on the status code, people read the rest.
const errPrefix = "FlagdError:, "

// Status codes as flagd's evaluation service maps its error codes
// (core/pkg/service/flag-evaluation, errFormat): FLAG_NOT_FOUND → NotFound,
// TYPE_MISMATCH → InvalidArgument, PARSE_ERROR → DataLoss, anything else
// (GENERAL, INVALID_CONTEXT, TARGETING_KEY_MISSING) → Unknown. (flagd's
// older FLAG_DISABLED → Unavailable is gone: a disabled flag is an answer
// without a value, see resultError.)
func codeFor(c evaluator.ErrorCode) codes.Code {
	switch c {
	case evaluator.CodeFlagNotFound:
		return codes.NotFound
	case evaluator.CodeTypeMismatch:
		return codes.InvalidArgument
	case evaluator.CodeParseError:
		return codes.DataLoss
	default:
		return codes.Unknown
	}
}

func evalError(code evaluator.ErrorCode, details string) error {
	msg := errPrefix + string(code)
	if details != "" {
		msg += ", " + details
	}
	return status.Error(codeFor(code), msg)
}

// evaluate answers flag key for the request context exactly as the OFREP
// endpoint does: same snapshot, same context decoder and limits, and
// FreshSource for flags that are not cache-first. err is a gRPC status for
// every answer that carries no value.
func (s *Server) evaluate(ctx context.Context, key string, reqCtx *structpb.Struct) (evaluator.Result, *structCache, error) {
	snap := s.o.Source.Current()
	if snap == nil {
		return evaluator.Result{}, nil, status.Error(codes.Unavailable, errPrefix+"PROVIDER_NOT_READY, no flag set loaded yet; retry shortly")
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	var err error
	if sc.buf, err = decodeContext(sc.ec, reqCtx, s.o.Limits, sc.buf); err != nil {
		var ce *evaluator.ContextError
		if errors.As(err, &ce) {
			return evaluator.Result{}, nil, evalError(ce.Code, ce.Detail)
		}
		return evaluator.Result{}, nil, evalError(evaluator.CodeParseError, err.Error())
	}
	r, used := s.evaluateFlag(ctx, snap, key, sc.ec)
	return r, s.caches.forSnapshot(used), resultError(&r)
}

func (s *Server) getScratch() *scratch { return s.ctxs.Get().(*scratch) }

// putScratch returns sc to the pool, without a buffer grown by one unusually
// large context: the pool should not pin that memory.
func (s *Server) putScratch(sc *scratch) {
	if cap(sc.buf) > 64<<10 {
		sc.buf = make([]byte, 0, 512)
	}
	s.ctxs.Put(sc)
}

// resultError is the status for a result that is an error. Any error code
// is one, as in OFREP, whose error body carries no value. A disabled flag
// and a flag with no default variant are not errors: as flagd answers them
// (its code-default ADR and flagd#1965), the response has reason DISABLED
// or DEFAULT and no value and no variant, which tells the provider to use
// the caller's code default.
func resultError(r *evaluator.Result) error {
	if r.ErrorCode != evaluator.CodeNone {
		return evalError(r.ErrorCode, r.ErrorDetails)
	}
	return nil
}

// variant is r's variant for a typed response: unset when there is none.
func variant(r *evaluator.Result) *string {
	if r.Variant == "" {
		return nil
	}
	return &r.Variant
}

func typeMismatch(r *evaluator.Result, want string) error {
	return evalError(evaluator.CodeTypeMismatch, "flag '"+r.Key+"' is not a "+want+" flag (variant "+r.Variant+" is "+string(r.ValueJSON)+")")
}

func (e *evalService) ResolveBoolean(ctx context.Context, req *evalv1.ResolveBooleanRequest) (*evalv1.ResolveBooleanResponse, error) {
	r, c, err := e.s.evaluate(ctx, req.GetFlagKey(), req.GetContext())
	if err != nil {
		return nil, err
	}
	resp := &evalv1.ResolveBooleanResponse{Reason: string(r.Reason), Metadata: c.metadata(&r)}
	if r.HasValue {
		v, ok := r.Value.(bool)
		if !ok {
			return nil, typeMismatch(&r, "boolean")
		}
		resp.Value, resp.Variant = &v, variant(&r)
	}
	return resp, nil
}

func (e *evalService) ResolveString(ctx context.Context, req *evalv1.ResolveStringRequest) (*evalv1.ResolveStringResponse, error) {
	r, c, err := e.s.evaluate(ctx, req.GetFlagKey(), req.GetContext())
	if err != nil {
		return nil, err
	}
	resp := &evalv1.ResolveStringResponse{Reason: string(r.Reason), Metadata: c.metadata(&r)}
	if r.HasValue {
		v, ok := r.Value.(string)
		if !ok {
			return nil, typeMismatch(&r, "string")
		}
		resp.Value, resp.Variant = &v, variant(&r)
	}
	return resp, nil
}

func (e *evalService) ResolveFloat(ctx context.Context, req *evalv1.ResolveFloatRequest) (*evalv1.ResolveFloatResponse, error) {
	r, c, err := e.s.evaluate(ctx, req.GetFlagKey(), req.GetContext())
	if err != nil {
		return nil, err
	}
	resp := &evalv1.ResolveFloatResponse{Reason: string(r.Reason), Metadata: c.metadata(&r)}
	if r.HasValue {
		v, ok := asFloat(r.Value)
		if !ok {
			return nil, typeMismatch(&r, "number")
		}
		resp.Value, resp.Variant = &v, variant(&r)
	}
	return resp, nil
}

func (e *evalService) ResolveInt(ctx context.Context, req *evalv1.ResolveIntRequest) (*evalv1.ResolveIntResponse, error) {
	r, c, err := e.s.evaluate(ctx, req.GetFlagKey(), req.GetContext())
	if err != nil {
		return nil, err
	}
	resp := &evalv1.ResolveIntResponse{Reason: string(r.Reason), Metadata: c.metadata(&r)}
	if r.HasValue {
		v, ok := asInt(r.Value)
		if !ok {
			return nil, typeMismatch(&r, "number")
		}
		resp.Value, resp.Variant = &v, variant(&r)
	}
	return resp, nil
}

func (e *evalService) ResolveObject(ctx context.Context, req *evalv1.ResolveObjectRequest) (*evalv1.ResolveObjectResponse, error) {
	r, c, err := e.s.evaluate(ctx, req.GetFlagKey(), req.GetContext())
	if err != nil {
		return nil, err
	}
	resp := &evalv1.ResolveObjectResponse{Reason: string(r.Reason), Metadata: c.metadata(&r)}
	if r.HasValue {
		if _, ok := r.Value.(map[string]any); !ok {
			return nil, typeMismatch(&r, "object")
		}
		v, ok := c.object(r.ValueJSON)
		if !ok {
			return nil, evalError(evaluator.CodeGeneral, "flag '"+r.Key+"': variant "+r.Variant+" cannot be encoded as a protobuf Struct")
		}
		resp.Value, resp.Variant = v, variant(&r)
	}
	return resp, nil
}

// ResolveAll evaluates every flag as the OFREP bulk endpoint does (one
// freshness check for the whole answer, see bulkFresh). Like
// flagd it leaves out disabled flags and, since AnyFlag cannot say "error"
// or "no value", flags that answer with an error or the caller's default;
// integers are sent as double_value (flagd's numbers are float64) and
// arrays, which AnyFlag cannot carry, are left out.
func (e *evalService) ResolveAll(ctx context.Context, req *evalv1.ResolveAllRequest) (*evalv1.ResolveAllResponse, error) {
	s := e.s
	snap := s.o.Source.Current()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, errPrefix+"PROVIDER_NOT_READY, no flag set loaded yet; retry shortly")
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	var err error
	if sc.buf, err = decodeContext(sc.ec, req.GetContext(), s.o.Limits, sc.buf); err != nil {
		var ce *evaluator.ContextError
		if errors.As(err, &ce) {
			return nil, evalError(ce.Code, ce.Detail)
		}
		return nil, evalError(evaluator.CodeParseError, err.Error())
	}
	res := &evalv1.ResolveAllResponse{Flags: make(map[string]*evalv1.AnyFlag, snap.Len()), Metadata: emptyStruct}
	if st := s.current(); st != nil && st.set != nil && len(st.set.metadata) > 0 {
		if m, err := toStruct(st.set.metadata); err == nil {
			res.Metadata = m
		}
	}
	snap, freshErr := s.bulkFresh(ctx, snap)
	c := s.caches.forSnapshot(snap)
	for _, key := range snap.Keys() {
		f := snap.Flag(key)
		var r evaluator.Result
		if freshErr != nil && f.Propagation() == evaluator.AlwaysFresh {
			r = s.failModeResult(snap, f, sc.ec, freshErr)
		} else {
			r = s.evalFlag(snap, f, sc.ec)
		}
		if r.Reason == evaluator.ReasonDisabled || resultError(&r) != nil || !r.HasValue {
			continue
		}
		af := &evalv1.AnyFlag{Reason: string(r.Reason), Variant: r.Variant, Metadata: c.metadata(&r)}
		switch v := r.Value.(type) {
		case bool:
			af.Value = &evalv1.AnyFlag_BoolValue{BoolValue: v}
		case string:
			af.Value = &evalv1.AnyFlag_StringValue{StringValue: v}
		case int64, float64:
			f, _ := asFloat(v)
			af.Value = &evalv1.AnyFlag_DoubleValue{DoubleValue: f}
		case map[string]any:
			o, ok := c.object(r.ValueJSON)
			if !ok {
				continue
			}
			af.Value = &evalv1.AnyFlag_ObjectValue{ObjectValue: o}
		default:
			continue
		}
		res.Flags[key] = af
	}
	return res, nil
}

// metadata is the result's metadata as a Struct, converted once per snapshot.
func (c *structCache) metadata(r *evaluator.Result) *structpb.Struct {
	if m, ok := c.object(r.MetadataJSON); ok {
		return m
	}
	return emptyStruct
}

// Event types, as flagd names them.
const (
	eventReady     = "provider_ready"
	eventChange    = "configuration_change"
	eventKeepAlive = "keep_alive"
)

// EventStream sends provider_ready once a flag set is loaded (at once on a
// serving sidecar), then configuration_change with
// the changed flags (data {"flags": {key: {"type", "source", "flagKey"}}})
// for every new flag set, and keep_alive every KeepAlive, until the client
// goes away or the server stops.
func (e *evalService) EventStream(_ *evalv1.EventStreamRequest, stream grpc.ServerStreamingServer[evalv1.EventStreamResponse]) error {
	s := e.s
	st := s.current()
	// Ready means "ask me": before the first flag set is loaded (a remote
	// sidecar still bootstrapping) every answer would be PROVIDER_NOT_READY,
	// so provider_ready waits for it.
	for st.snap == nil {
		select {
		case <-st.changed:
			st = s.current()
		case <-stream.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
	}
	if err := stream.Send(&evalv1.EventStreamResponse{Type: eventReady, Data: emptyStruct}); err != nil {
		return err
	}
	keep := time.NewTicker(s.o.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-st.changed:
			next := s.current()
			changed := changedFlags(st.keys(), next.keys(), st.set, next.set)
			st = next
			if len(changed) == 0 {
				continue
			}
			data, err := changeData(changed, s.o.SourceName)
			if err != nil {
				s.log.Error("configuration_change event not encoded", zap.Error(err))
				continue
			}
			if err := stream.Send(&evalv1.EventStreamResponse{Type: eventChange, Data: data}); err != nil {
				return err
			}
		case <-keep.C:
			if err := stream.Send(&evalv1.EventStreamResponse{Type: eventKeepAlive, Data: emptyStruct}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
	}
}

func changeData(changed map[string]string, source string) (*structpb.Struct, error) {
	flags := make(map[string]any, len(changed))
	for k, typ := range changed {
		flags[k] = map[string]any{"type": typ, "source": source, "flagKey": k}
	}
	return toStruct(map[string]any{"flags": flags})
}
