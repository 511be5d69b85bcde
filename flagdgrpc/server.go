package flagdgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1/evaluationv1connect"
	"github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1/syncv1connect"
	"github.com/pennon-dev/pennon/proxy"
)

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// EvalAddr is the evaluation service's address (flagd's 8013); empty
	// disables it. SyncAddr is the sync service's (flagd's 8015); empty
	// disables it. Non-loopback addresses are refused unless AllowRemote,
	// as for the OFREP port: the sidecar serves its own pod.
	EvalAddr, SyncAddr string
	AllowRemote        bool
	// Source supplies snapshots. Required. A proxy.FreshSource is used for
	// flags that are not cache-first, exactly as the OFREP server does.
	Source proxy.Source
	// Documents supplies the flag document for the sync service. Default:
	// Source, when it implements DocumentSource. Required when SyncAddr is set.
	Documents DocumentSource
	// SourceName names the source in events and GetMetadata.
	SourceName string
	Logger     *zap.Logger
	// Limits bound the decoded evaluation context (as for OFREP).
	Limits evaluator.Limits
	// FreshTimeout bounds FreshSource.Fresh per request; default 250ms.
	FreshTimeout time.Duration
	// DrainTimeout bounds graceful shutdown; default 5s.
	DrainTimeout time.Duration
	// KeepAlive is the interval of EventStream's keep_alive events (flagd
	// sends one every 20s); default 20s.
	KeepAlive time.Duration
	// Registry, if set, receives the gRPC metrics (the sidecar passes the
	// registry it serves on /metrics).
	Registry prometheus.Registerer
	// EvaluateFlag, if set, evaluates a flag the way the OFREP server does
	// (proxy.Server.EvaluateFlag: a flag with fallbackTargeting serves it
	// under cost or overload), so both protocols answer alike. Default:
	// Snapshot.EvaluateFlag.
	EvaluateFlag func(*evaluator.Snapshot, *evaluator.Flag, *evaluator.Context) evaluator.Result
}

// Server runs flagd's evaluation and sync services.
type Server struct {
	o      Options
	log    *zap.Logger
	m      *metrics
	fresh  proxy.FreshSource
	caches structCaches
	ctxs   sync.Pool // *scratch

	mu      sync.Mutex
	st      *state // latest flag-set state, replaced by watch
	stop    chan struct{}
	evalSrv *http.Server
	syncSrv *http.Server
	evalLn  net.Listener
	syncLn  net.Listener
}

// scratch is per-request memory kept in a pool: the decoded context and the
// buffer the context Struct is written to.
type scratch struct {
	ec  *evaluator.Context
	buf []byte
}

// New validates o and builds the services; call Listen (optional) and Serve.
func New(o Options) (*Server, error) {
	if o.Source == nil {
		return nil, errors.New("flagdgrpc: Options.Source is required")
	}
	if o.EvalAddr == "" && o.SyncAddr == "" {
		return nil, errors.New("flagdgrpc: set EvalAddr (--grpc-addr) or SyncAddr (--sync-addr), or do not start the gRPC services")
	}
	for _, a := range []struct{ name, addr string }{{"grpc-addr", o.EvalAddr}, {"sync-addr", o.SyncAddr}} {
		if a.addr != "" {
			if err := checkLoopback(a.name, a.addr, o.AllowRemote); err != nil {
				return nil, err
			}
		}
	}
	if o.Documents == nil {
		o.Documents, _ = o.Source.(DocumentSource)
	}
	if o.SyncAddr != "" && o.Documents == nil {
		return nil, errors.New("flagdgrpc: the sync service (--sync-addr) needs the flag document, and this source does not keep it; set Options.Documents or disable the sync service with an empty --sync-addr")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.FreshTimeout <= 0 {
		o.FreshTimeout = 250 * time.Millisecond
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 20 * time.Second
	}
	s := &Server{o: o, log: o.Logger, stop: make(chan struct{}), m: newMetrics(o.Registry)}
	s.fresh, _ = o.Source.(proxy.FreshSource)
	s.ctxs.New = func() any { return &scratch{ec: evaluator.NewContext(), buf: make([]byte, 0, 512)} }
	if o.EvalAddr != "" {
		path, h := evaluationv1connect.NewServiceHandler(&connectEval{s: s, e: &evalService{s: s}}, connect.WithReadMaxBytes(maxRecvMsg))
		s.evalSrv = s.httpServer(path, h)
	}
	if o.SyncAddr != "" {
		path, h := syncv1connect.NewFlagSyncServiceHandler(&connectSync{s: s, y: &syncService{s: s}}, connect.WithReadMaxBytes(maxRecvMsg))
		s.syncSrv = s.httpServer(path, h)
	}
	return s, nil
}

func checkLoopback(name, addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("flagdgrpc: %s %q: %v (want host:port, e.g. 127.0.0.1:8013)", name, addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("flagdgrpc: %s %q is not a loopback address; the sidecar serves its own pod only (set --allow-remote to override)", name, addr)
	}
	return nil
}

// Listen binds the addresses (Serve calls it if needed); EvalAddr and
// SyncAddr then report the bound addresses, useful with port 0.
func (s *Server) Listen() error {
	if s.evalSrv != nil && s.evalLn == nil {
		ln, err := net.Listen("tcp", s.o.EvalAddr)
		if err != nil {
			return fmt.Errorf("flagdgrpc: listen %s (grpc-addr): %w; choose another --grpc-addr, or an empty one to disable the evaluation service", s.o.EvalAddr, err)
		}
		s.evalLn = ln
	}
	if s.syncSrv != nil && s.syncLn == nil {
		ln, err := net.Listen("tcp", s.o.SyncAddr)
		if err != nil {
			if s.evalLn != nil {
				s.evalLn.Close()
				s.evalLn = nil
			}
			return fmt.Errorf("flagdgrpc: listen %s (sync-addr): %w; choose another --sync-addr, or an empty one to disable the sync service", s.o.SyncAddr, err)
		}
		s.syncLn = ln
	}
	return nil
}

// EvalAddr is the evaluation service's bound address after Listen ("" when disabled).
func (s *Server) EvalAddr() string {
	if s.evalLn != nil {
		return s.evalLn.Addr().String()
	}
	return s.o.EvalAddr
}

// SyncAddr is the sync service's bound address after Listen ("" when disabled).
func (s *Server) SyncAddr() string {
	if s.syncLn != nil {
		return s.syncLn.Addr().String()
	}
	return s.o.SyncAddr
}

// Serve serves until ctx is cancelled, then ends event and sync streams and
// drains in-flight calls for at most DrainTimeout. A listener that fails
// stops both services and is returned.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.setState(s.buildState(nil))
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	serve := func(srv *http.Server, ln net.Listener, what string) {
		if srv == nil {
			return
		}
		s.log.Info("flagd gRPC service listening", zap.String("service", what), zap.String("addr", ln.Addr().String()), zap.String("source", s.o.SourceName))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("flagdgrpc: %s service: %w", what, err)
			}
		}()
	}
	serve(s.evalSrv, s.evalLn, "evaluation")
	serve(s.syncSrv, s.syncLn, "sync")
	wctx, stopWatch := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); s.watch(wctx) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopWatch()
	close(s.stop) // ends EventStream and SyncFlags, which Shutdown would wait for
	s.drain()
	wg.Wait()
	if err == nil {
		s.log.Info("flagd gRPC services stopped")
	}
	return err
}

// drain stops both services gracefully, closing them after DrainTimeout.
func (s *Server) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.DrainTimeout)
	defer cancel()
	for _, srv := range []*http.Server{s.evalSrv, s.syncSrv} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			s.log.Warn("gRPC drain incomplete", zap.Duration("timeout", s.o.DrainTimeout), zap.Error(err))
			_ = srv.Close()
		}
	}
}

// httpServer serves one connect handler over HTTP/1.1 and cleartext
// HTTP/2 (prior knowledge, which is how gRPC clients connect without TLS).
func (s *Server) httpServer(path string, h http.Handler) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(path, h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: mux, Protocols: &p, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zap.WarnLevel)))}
}

// maxRecvMsg bounds a request message. Contexts are limited far lower
// (Options.Limits, 64 KiB by default, as for OFREP); this only stops a
// client from making the server buffer a large message first.
const maxRecvMsg = 1 << 20
