// Package proxy is the sidecar's HTTP server: OpenFeature's Remote
// Evaluation Protocol (OFREP) on localhost, a change stream (SSE), health,
// readiness, Prometheus metrics and status. It serves immutable evaluator
// snapshots from a Source and never imports NATS: sync reaches it only
// through the interfaces in source.go.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/evaluator"
)

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Addr to listen on; default 127.0.0.1:8016. Non-loopback addresses are
	// refused unless AllowRemote: the sidecar is meant for its own pod.
	Addr        string
	AllowRemote bool
	// Source supplies snapshots. Required.
	Source Source
	// Experiments receives exposures of experiment flags and tracked
	// events (optional; experiment.Recorder implements it).
	Experiments ExperimentRecorder
	// SourceName describes the source in /v1/status (e.g. "file:flags.json").
	SourceName string
	Logger     *zap.Logger
	// Registry receives the metrics and is served on /metrics; default a new one.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies; default 64 KiB.
	MaxBodyBytes int
	// Limits bound the decoded evaluation context.
	Limits evaluator.Limits
	// CacheBytes sizes the response cache; default 16 MiB, negative disables it.
	CacheBytes int64
	// DrainTimeout bounds graceful shutdown; default 5s.
	DrainTimeout time.Duration
	// KeepAlive is the SSE comment interval; default 15s.
	KeepAlive time.Duration
	// FreshTimeout bounds FreshSource.Fresh per request; default 250ms.
	FreshTimeout time.Duration
	// MaxFlagSeries caps the (flag, variant, reason) series of
	// pennon_evaluations_total; past it, evaluations count in flag="_other"
	// (0: DefaultMaxFlagSeries). Usage reports stay per flag.
	MaxFlagSeries int
	// HealthAddr, if set, is a second listener serving only /healthz,
	// /readyz and /metrics, for kubelet probes and Prometheus, which cannot
	// reach the pod's loopback address. It may bind the pod IP (0.0.0.0).
	HealthAddr string
	// CacheMinCost: only flags at least this expensive (evaluator.Flag.Cost)
	// are cached; cheaper ones are faster to evaluate than to look up.
	// Default 40; negative caches every cacheable flag.
	CacheMinCost int
	// NoBulkCache keeps whole bulk answers out of the response cache. By
	// default (cache on) a bulk answer is cached under (snapshot version,
	// the context values the flag set's targeting reads): a repeated
	// context is answered with one lookup and one memmove instead of
	// evaluating every targeted flag (docs/sidecar.md, "Response cache").
	NoBulkCache bool
	// TargetingBudget is the default evaluation budget of flags with
	// fallbackTargeting and no targetingBudget (degrade.go); default 50µs.
	TargetingBudget time.Duration
	// OverloadInFlight: above this many OFREP requests in flight the
	// sidecar is overloaded and flags with fallbackTargeting serve it;
	// default 256, negative turns overload detection off.
	OverloadInFlight int
	// CostSampleEvery: one evaluation in this many of a flag with
	// fallbackTargeting is timed; a power of two, default 64, negative
	// turns cost measuring off.
	CostSampleEvery int
	// NoUsage turns usage counting off (usage.go, docs/usage.md): the
	// per-flag evaluation counts the control plane aggregates.
	NoUsage bool
}

// Server is the sidecar's HTTP server.
type Server struct {
	o         Options
	log       *zap.Logger
	src       Source
	fresh     FreshSource
	status    StatusSource
	m         *metrics
	deg       *degrader // degrade.go: fallback targeting under cost or overload
	reg       *prometheus.Registry
	cache     *ristretto.Cache[[]byte, *cacheEntry]
	guard     *cacheGuard              // steps the single-flag cache aside when it stops paying
	plan      atomic.Pointer[bulkPlan] // bulk.go: the last snapshot's bulk plan
	planMu    sync.Mutex               // one plan build at a time (bulkPlanFor)
	door      *doorkeeper              // bulk.go: bulk contexts that missed once
	bulkAdmit bulkAdmission            // bulk.go: stops caching bulk answers that are not reused
	bulkUsed  atomic.Bool              // a bulk request was served: plans are built ahead
	srv       *fasthttp.Server
	ctxPool   sync.Pool
	bufPool   sync.Pool

	ln      net.Listener
	health  *fasthttp.Server
	hln     net.Listener
	stop    chan struct{} // closed when shutdown begins: ends SSE streams
	started time.Time

	lastVersion atomic.Uint64
	lastChange  atomic.Int64 // unix nanos of the last snapshot change seen

	freshIdx atomic.Pointer[freshIndex] // fresh.go: the last snapshot's non-cache-first flags

	usage *usage // usage.go: nil when Options.NoUsage
}

// New validates o and builds a server; call Listen (optional) and Serve.
func New(o Options) (*Server, error) {
	if o.Source == nil {
		return nil, errors.New("proxy: Options.Source is required")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8016"
	}
	if err := checkLoopback(o.Addr, o.AllowRemote); err != nil {
		return nil, err
	}
	if o.HealthAddr != "" {
		if _, _, err := net.SplitHostPort(o.HealthAddr); err != nil {
			return nil, fmt.Errorf("proxy: health addr %q: %v (want host:port, e.g. 0.0.0.0:8017)", o.HealthAddr, err)
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 16 << 20
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.FreshTimeout <= 0 {
		o.FreshTimeout = 250 * time.Millisecond
	}
	if o.CacheMinCost == 0 {
		o.CacheMinCost = 40
	}
	s := &Server{o: o, log: o.Logger, src: o.Source, reg: o.Registry, stop: make(chan struct{}), started: time.Now()}
	s.fresh, _ = o.Source.(FreshSource)
	s.status, _ = o.Source.(StatusSource)
	s.m = newMetrics(o.Registry, o.Source, o.MaxFlagSeries)
	if !o.NoUsage {
		s.usage = newUsage(s.m)
		s.m.usage = s.usage
	}
	deg, err := newDegrader(&o, o.Logger, newDegradeMetrics(o.Registry))
	if err != nil {
		return nil, err
	}
	s.deg, s.m.deg = deg, deg
	o.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_snapshot_age_seconds",
		Help: "Seconds since the served flag set last changed."}, func() float64 {
		if ns := s.lastChange.Load(); ns > 0 {
			return time.Since(time.Unix(0, ns)).Seconds()
		}
		return 0
	}))
	if o.CacheBytes > 0 {
		c, err := ristretto.NewCache(&ristretto.Config[[]byte, *cacheEntry]{
			NumCounters: max(o.CacheBytes/64, 1000), MaxCost: o.CacheBytes, BufferItems: 64, Metrics: true,
		})
		if err != nil {
			return nil, fmt.Errorf("proxy: response cache: %w", err)
		}
		s.cache = c
		s.door = new(doorkeeper)
		bypass := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pennon_cache_bypassed",
			Help: "1 while the single-flag response cache is stepped aside because its hit rate collapsed."})
		o.Registry.MustRegister(bypass)
		s.guard = newCacheGuard(s.log, bypass)
	}
	s.ctxPool.New = func() any { return evaluator.NewContext() }
	s.bufPool.New = func() any { b := make([]byte, 0, 1024); return &b }
	s.srv = &fasthttp.Server{
		Handler:               s.Handler(),
		Name:                  "pennon",
		MaxRequestBodySize:    o.MaxBodyBytes,
		ReadTimeout:           30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		ErrorHandler:          s.transportError,
		Logger:                zapPrintf{o.Logger},
	}
	if o.HealthAddr != "" {
		full := s.srv.Handler
		s.health = &fasthttp.Server{Name: "pennon", NoDefaultServerHeader: true, ReadTimeout: 10 * time.Second, Logger: zapPrintf{o.Logger},
			Handler: func(ctx *fasthttp.RequestCtx) {
				switch string(ctx.Path()) {
				case "/healthz", "/readyz", "/metrics":
					full(ctx)
				default:
					s.writeError(ctx, fasthttp.StatusNotFound, "", "GENERAL", "the health listener serves only /healthz, /readyz and /metrics")
				}
			}}
	}
	return s, nil
}

func checkLoopback(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("proxy: addr %q: %v (want host:port, e.g. 127.0.0.1:8016)", addr, err)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("proxy: addr %q is not a loopback address; the sidecar serves its own pod only (set allow-remote to override)", addr)
	}
	return nil
}

// zapPrintf adapts zap to fasthttp's logger; fasthttp logs rare transport
// problems, at debug level so a misbehaving client cannot flood the log.
type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) {
	z.l.Debug("fasthttp", zap.String("msg", fmt.Sprintf(format, args...)))
}

// Listen binds the address (Serve calls it if needed). Addr then reports
// the bound address, useful with port 0.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", s.o.Addr, err)
	}
	if s.health != nil {
		hln, err := net.Listen("tcp", s.o.HealthAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("proxy: listen %s (health): %w", s.o.HealthAddr, err)
		}
		s.hln = hln
	}
	s.ln = ln
	return nil
}

// HealthAddr is the bound health listener's address ("" without one).
func (s *Server) HealthAddr() string {
	if s.hln != nil {
		return s.hln.Addr().String()
	}
	return ""
}

// Addr is the bound address after Listen, else the configured one.
func (s *Server) Addr() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.o.Addr
}

// Serve serves until ctx is cancelled, then stops accepting, ends change
// streams and drains in-flight requests for at most DrainTimeout.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.log.Info("sidecar listening", zap.String("addr", s.Addr()), zap.String("source", s.o.SourceName))
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	herrc := make(chan error, 1)
	if s.health != nil {
		go func() { herrc <- s.health.Serve(s.hln) }()
		s.log.Info("health listener", zap.String("addr", s.HealthAddr()))
		defer func() { _ = s.health.Shutdown(); _ = s.hln.Close(); <-herrc }()
	}
	watchDone := make(chan struct{})
	go s.watchVersions(watchDone)
	defer func() { <-watchDone }()
	select {
	case err := <-errc:
		close(s.stop)
		if s.cache != nil {
			s.cache.Close()
		}
		return err
	case <-ctx.Done():
	}
	close(s.stop)
	dctx, cancel := context.WithTimeout(context.Background(), s.o.DrainTimeout)
	defer cancel()
	err := s.srv.ShutdownWithContext(dctx)
	// fasthttp's Shutdown closes only the listeners its Serve has already
	// registered. When ctx ends right after start, the Serve goroutine may
	// not have got that far: it would then accept on the listener forever
	// and this wait would never end. Closing the listener ourselves makes
	// such a late Serve return at once (closing twice is harmless).
	_ = s.ln.Close()
	<-errc
	if s.cache != nil {
		s.cache.Close()
	}
	if err != nil {
		s.log.Warn("drain incomplete", zap.Duration("timeout", s.o.DrainTimeout), zap.Error(err))
		return nil
	}
	s.log.Info("sidecar stopped")
	return nil
}

var (
	pathSingle  = []byte("/ofrep/v1/evaluate/flags/")
	pathBulk    = []byte("/ofrep/v1/evaluate/flags")
	ctJSON      = []byte("application/json")
	methodPost  = []byte("POST")
	methodGet   = []byte("GET")
	methodHead  = []byte("HEAD")
	contentType = "application/json"
)

// Handler is the request router (exposed for in-memory tests and fuzzing).
func (s *Server) Handler() fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		s.m.inFlight.Inc()
		defer s.m.inFlight.Dec()
		defer func() {
			if p := recover(); p != nil {
				s.m.panics.Inc()
				s.log.Error("handler panic", zap.Any("panic", p), zap.ByteString("path", ctx.Path()))
				ctx.ResetBody()
				s.writeError(ctx, fasthttp.StatusInternalServerError, "", "GENERAL", "internal error")
			}
		}()
		path := ctx.Path()
		switch {
		case bytes.HasPrefix(path, pathSingle):
			if s.requirePost(ctx) {
				s.evaluateOne(ctx, string(path[len(pathSingle):]))
			}
		case bytes.Equal(path, pathBulk):
			if s.requirePost(ctx) {
				s.evaluateBulk(ctx)
			}
		case string(path) == "/v1/stream":
			if s.requireGet(ctx) {
				s.stream(ctx)
			}
		case string(path) == "/v1/track":
			if s.requirePost(ctx) {
				s.track(ctx)
			}
		case string(path) == "/healthz":
			if s.requireGet(ctx) {
				ctx.SetContentType(contentType)
				ctx.SetBodyString(`{"status":"ok"}`)
			}
		case string(path) == "/readyz":
			if s.requireGet(ctx) {
				s.readyz(ctx)
			}
		case string(path) == "/metrics":
			if s.requireGet(ctx) {
				s.metricsHandler(ctx)
			}
		case string(path) == "/v1/status":
			if s.requireGet(ctx) {
				s.statusHandler(ctx)
			}
		default:
			s.writeError(ctx, fasthttp.StatusNotFound, "", "GENERAL", fmt.Sprintf("no such endpoint %q; see /v1/status for what this sidecar serves", truncate(string(path), 200)))
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Server) requirePost(ctx *fasthttp.RequestCtx) bool {
	if bytes.Equal(ctx.Method(), methodPost) {
		return true
	}
	ctx.Response.Header.Set("Allow", "POST")
	s.writeError(ctx, fasthttp.StatusMethodNotAllowed, "", "GENERAL", "method "+string(ctx.Method())+" not allowed; use POST")
	return false
}

func (s *Server) requireGet(ctx *fasthttp.RequestCtx) bool {
	if m := ctx.Method(); bytes.Equal(m, methodGet) || bytes.Equal(m, methodHead) {
		return true
	}
	ctx.Response.Header.Set("Allow", "GET, HEAD")
	s.writeError(ctx, fasthttp.StatusMethodNotAllowed, "", "GENERAL", "method "+string(ctx.Method())+" not allowed; use GET")
	return false
}

// transportError answers requests fasthttp rejects before routing, most
// importantly bodies over the limit, with a JSON body.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		s.writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "", "GENERAL", fmt.Sprintf("request body exceeds %d bytes", s.o.MaxBodyBytes))
		return
	}
	s.writeError(ctx, fasthttp.StatusBadRequest, "", "PARSE_ERROR", "malformed HTTP request")
}

func (s *Server) writeError(ctx *fasthttp.RequestCtx, status int, key, code, details string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentType)
	ctx.SetBody(appendError(nil, key, code, details))
	if code != "" {
		s.m.errors.WithLabelValues(code).Inc()
	}
}

// checkContentType accepts JSON (with parameters) or no content type at all.
func (s *Server) checkContentType(ctx *fasthttp.RequestCtx, key string) bool {
	ct := ctx.Request.Header.ContentType()
	if len(ct) == 0 {
		return true
	}
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if bytes.EqualFold(bytes.TrimSpace(ct), ctJSON) {
		return true
	}
	s.writeError(ctx, fasthttp.StatusUnsupportedMediaType, key, "PARSE_ERROR", "content type "+truncate(string(ctx.Request.Header.ContentType()), 100)+" is not supported; send application/json")
	return false
}

// decodeContext decodes the request's "context"; an empty body is an empty
// context. On failure it has written the error response.
func (s *Server) decodeContext(ctx *fasthttp.RequestCtx, key string, ec *evaluator.Context, needed bool) bool {
	body := ctx.PostBody()
	if len(bytes.TrimSpace(body)) == 0 {
		ec.Reset()
		return true
	}
	var err error
	if needed {
		err = ec.DecodeField(body, "context", s.o.Limits)
	} else {
		err = ec.ValidateField(body, "context", s.o.Limits) // answer does not read it
	}
	if err != nil {
		// A body that is not a JSON object with an object "context" is an
		// invalid evaluation context, as flagd's OFREP endpoint answers it
		// (PARSE_ERROR is OpenFeature's code for a bad flag configuration).
		detail := err.Error()
		var ce *evaluator.ContextError
		if errors.As(err, &ce) {
			detail = ce.Detail
		}
		s.writeError(ctx, fasthttp.StatusBadRequest, key, "INVALID_CONTEXT", detail)
		return false
	}
	return true
}

func (s *Server) notReady(ctx *fasthttp.RequestCtx, key string) {
	ctx.Response.Header.Set("Retry-After", "1")
	s.writeError(ctx, fasthttp.StatusServiceUnavailable, key, "PROVIDER_NOT_READY", "no flag set loaded yet")
}

func (s *Server) evaluateOne(ctx *fasthttp.RequestCtx, key string) {
	start := ctx.Time() // set by fasthttp when the request arrived: no extra clock read
	s.deg.enter()       // in-flight count: overload detection (degrade.go)
	defer s.deg.exit()
	if key == "" || strings.Contains(key, "/") {
		s.writeError(ctx, fasthttp.StatusNotFound, key, string(evaluator.CodeFlagNotFound), "flag key missing or malformed in path")
		return
	}
	if !s.checkContentType(ctx, key) {
		return
	}
	snap := s.src.Current()
	if snap == nil {
		s.notReady(ctx, key)
		return
	}
	f := snap.Flag(key)
	ec := s.ctxPool.Get().(*evaluator.Context)
	defer s.ctxPool.Put(ec)
	if !s.decodeContext(ctx, key, ec, f != nil && (f.NeedsContext() || f.ExperimentMetrics() != nil)) {
		return
	}
	if a := s.usage.app(ctx); a != nil {
		if f == nil {
			a.flag("") // client-supplied keys are never reported
		} else {
			a.flag(f.Key())
		}
	}
	bp := s.bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	var r evaluator.Result
	switch {
	case f == nil:
		r = snap.Evaluate(key, ec)
		s.m.countEval(false, &r)
	case f.Propagation() != evaluator.CacheFirst && s.fresh != nil:
		r = s.evaluateFresh(snap, f, ec)
		s.m.countEval(true, &r)
	case f.HasFallback() && s.evaluateDegradable(snap, f, ec, &r):
		// Fallback answers and sampled cost probes, never through the cache.
		s.m.countEval(true, &r)
	default:
		var hit, counted bool
		if buf, hit, counted, r = s.cached(buf, snap, f, ec); hit {
			if f.ExpiredAt(start) {
				s.m.expired.WithLabelValues(f.Key()).Inc()
			}
			ctx.SetContentType(contentType)
			ctx.SetBody(buf)
			s.putBuf(bp, buf)
			s.m.latency.Observe(time.Since(start).Seconds())
			return
		}
		if !counted {
			r = snap.EvaluateFlag(f, ec)
			s.m.countEval(true, &r)
		}
	}
	if f != nil && s.o.Experiments != nil && f.ExperimentMetrics() != nil {
		s.expose(f, ec, &r)
	}
	if f != nil && f.ExpiredAt(start) {
		s.m.expired.WithLabelValues(f.Key()).Inc()
	}
	ctx.SetContentType(contentType)
	switch r.ErrorCode {
	case evaluator.CodeNone:
	case evaluator.CodeFlagNotFound:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	default:
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
	}
	buf = appendResult(buf, &r)
	ctx.SetBody(buf)
	s.putBuf(bp, buf)
	s.m.latency.Observe(time.Since(start).Seconds())
}

// evaluateFresh applies the flag's propagation strategy through the
// FreshSource; when freshness cannot be established failMode decides.
func (s *Server) evaluateFresh(local *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) evaluator.Result {
	fctx, cancel := context.WithTimeout(context.Background(), s.o.FreshTimeout)
	snap, err := s.fresh.Fresh(fctx, f)
	cancel()
	if err != nil {
		return s.failModeResult(local, f, ec, err)
	}
	if snap == nil {
		snap = local
	}
	if nf := snap.Flag(f.Key()); nf != nil {
		return snap.EvaluateFlag(nf, ec)
	}
	return snap.Evaluate(f.Key(), ec)
}

// cached answers from the response cache, or evaluates, encodes and caches.
// dst is reused for the encoded body. Only flags with targeting are worth
// caching: a static answer is cheaper to recompute than to look up. hit
// means dst holds the answer (cached or freshly cached); otherwise, when
// evaluated, r is the counted result the caller must encode (an error
// answer, which is not cached) and must not evaluate or count again.
func (s *Server) cached(dst []byte, snap *evaluator.Snapshot, f *evaluator.Flag, ec *evaluator.Context) (out []byte, hit, evaluated bool, r evaluator.Result) {
	// Experiment flags are not cached: every answer is an exposure to record.
	if s.cache == nil || len(f.Reads()) == 0 || f.Cost() < s.o.CacheMinCost || s.guard.bypassed() || f.ExperimentMetrics() != nil {
		return dst, false, false, r
	}
	kp := s.bufPool.Get().(*[]byte)
	key := append((*kp)[:0], f.Key()...)
	key = append(key, 0)
	key = appendUint(key, snap.ID()) // not the version: a rewind can reuse one
	key = append(key, 0)
	key, ok := f.AppendCacheKey(key, ec)
	defer func() { *kp = key; s.bufPool.Put(kp) }()
	if !ok {
		return dst, false, false, r
	}
	sample := s.guard.sample()
	var t0 time.Time
	if sample {
		t0 = time.Now()
	}
	e, hit := s.cache.Get(key)
	if sample {
		s.guard.observeLookup(time.Since(t0))
	}
	s.guard.record(hit)
	if hit {
		s.m.cacheHit.Inc()
		e.count() // a cached answer is an evaluation too
		return append(dst, e.body...), true, true, r
	}
	s.m.cacheMiss.Inc()
	if sample {
		t0 = time.Now()
	}
	r = snap.EvaluateFlag(f, ec)
	if sample {
		s.guard.observeEval(time.Since(t0))
	}
	c := s.m.countEval(true, &r)
	if r.ErrorCode != evaluator.CodeNone {
		return dst, false, true, r
	}
	dst = appendResult(dst, &r)
	s.cache.Set(append([]byte(nil), key...), &cacheEntry{body: append([]byte(nil), dst...), ctrs: []prometheus.Counter{c}},
		int64(len(dst)+len(key)+64))
	return dst, true, true, r
}

func (s *Server) evaluateBulk(ctx *fasthttp.RequestCtx) {
	start := ctx.Time()
	s.deg.enter() // in-flight count: overload detection (degrade.go)
	defer s.deg.exit()
	if !s.checkContentType(ctx, "") {
		return
	}
	snap := s.src.Current()
	if snap == nil {
		s.notReady(ctx, "")
		return
	}
	ec := s.ctxPool.Get().(*evaluator.Context)
	defer s.ctxPool.Put(ec)
	if !s.decodeContext(ctx, "", ec, true) {
		return
	}
	snap, freshErr := s.bulkFresh(snap)
	// An answer with flags on their fail mode is not the answer for this
	// version and context: it gets no ETag and is never a 304.
	etag := ""
	if freshErr == nil {
		etag = bulkETag(snap, ctx.PostBody())
		if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatches(inm, etag) {
			ctx.Response.Header.Set("ETag", etag)
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
	}
	if etag != "" {
		ctx.Response.Header.Set("ETag", etag)
	}
	ctx.SetContentType(contentType)
	bp := s.bufPool.Get().(*[]byte)
	var buf []byte
	app := s.usage.app(ctx)
	if freshErr != nil {
		buf = s.appendBulkFailMode((*bp)[:0], snap, ec, freshErr)
		ctx.SetBody(buf)
		if app != nil {
			for _, k := range snap.Keys() {
				app.flag(k)
			}
		}
	} else {
		if !s.bulkUsed.Load() {
			s.bulkUsed.Store(true)
		}
		plan := s.bulkPlanFor(snap)
		if s.o.Experiments != nil {
			s.exposeBulk(plan, ec)
		}
		buf = s.answerBulk(ctx, (*bp)[:0], plan, ec)
		if app != nil {
			app.bulk(plan)
		}
	}
	s.putBuf(bp, buf)
	s.m.latency.Observe(time.Since(start).Seconds())
}

// maxPooledBuffer is the largest answer buffer kept for reuse. A bulk
// answer over 1,000 flags (~90 KB) is reused; one over 100,000 flags
// (~9 MB) is left to the collector rather than held by the pool.
const maxPooledBuffer = 1 << 20

// putBuf returns buf to the pool in bp, unless it is too big to keep.
func (s *Server) putBuf(bp *[]byte, buf []byte) {
	if cap(buf) > maxPooledBuffer {
		return // a big answer's buffer (copied into the cache): left to the collector
	}
	*bp = buf
	s.bufPool.Put(bp)
}

// appendBulkFailMode is the bulk answer when freshness could not be
// established: always-fresh flags answer on their fail mode, the others
// as usual. It is rare and evaluates every flag; the plan serves the rest.
func (s *Server) appendBulkFailMode(buf []byte, snap *evaluator.Snapshot, ec *evaluator.Context, freshErr error) []byte {
	buf = append(buf, `{"flags":[`...)
	for i, key := range snap.Keys() {
		if i > 0 {
			buf = append(buf, ',')
		}
		f := snap.Flag(key)
		var r evaluator.Result
		if f.Propagation() == evaluator.AlwaysFresh {
			r = s.failModeResult(snap, f, ec, freshErr)
		} else {
			r = snap.EvaluateFlag(f, ec)
		}
		s.m.countEval(true, &r)
		buf = appendResult(buf, &r)
	}
	buf = append(buf, `],"metadata":{"version":`...)
	buf = appendString(buf, strconv.FormatUint(snap.Version(), 10))
	return append(buf, `},"eventStreams":[{"type":"sse","endpoint":{"requestUri":"/v1/stream"},"inactivityDelaySec":120}]}`...)
}

func etagMatches(header []byte, etag string) bool {
	for _, part := range bytes.Split(header, []byte(",")) {
		p := bytes.TrimSpace(part)
		p = bytes.TrimPrefix(p, []byte("W/"))
		if string(p) == etag || string(p) == "*" {
			return true
		}
	}
	return false
}

func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType(contentType)
	snap := s.src.Current()
	ok, detail := snap != nil, "flag set loaded"
	if snap == nil {
		detail = "no flag set loaded yet"
	}
	if ok && s.status != nil {
		ok, detail = s.status.Ready()
	}
	if !ok {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	}
	b := append([]byte(`{"ready":`), fmt.Sprint(ok)...)
	b = append(b, `,"detail":`...)
	b = appendString(b, detail)
	ctx.SetBody(append(b, '}'))
}

// CacheStats reports the response cache's counters.
type CacheStats struct {
	Enabled bool   `json:"enabled"`
	Hits    uint64 `json:"hits"`
	Misses  uint64 `json:"misses"`
	Added   uint64 `json:"added"`
	Evicted uint64 `json:"evicted"`
	Dropped uint64 `json:"droppedSets"`
	// Guard: whether the single-flag cache is stepped aside because its
	// hit rate collapsed (see cacheguard.go).
	Guard *cacheGuardStatus `json:"guard,omitempty"`
}

func (s *Server) cacheStats() CacheStats {
	if s.cache == nil || s.cache.Metrics == nil {
		return CacheStats{Enabled: s.cache != nil}
	}
	m := s.cache.Metrics
	st := CacheStats{Enabled: true, Hits: m.Hits(), Misses: m.Misses(), Added: m.KeysAdded(), Evicted: m.KeysEvicted(), Dropped: m.SetsDropped()}
	if s.guard != nil {
		g := s.guard.status()
		st.Guard = &g
	}
	return st
}

// watchVersions records when the served snapshot changes (for /v1/status
// and the snapshot age) until the server stops.
func (s *Server) watchVersions(done chan<- struct{}) {
	defer close(done)
	for {
		ch := s.src.Changed()
		if snap := s.src.Current(); snap != nil {
			s.noteVersion(snap.Version())
			if s.bulkUsed.Load() {
				// Build the new snapshot's bulk plan here, not in the first
				// bulk request after the swap (~2 ms per 1,000 flags).
				s.bulkPlanFor(snap)
			}
		}
		select {
		case <-ch:
		case <-s.stop:
			return
		}
	}
}
