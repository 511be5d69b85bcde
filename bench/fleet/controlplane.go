package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// controlPlane is one replica: its own NATS connection (preferring its
// own node), its own config.Store over the shared JetStream, the admin API
// behind a counting handler, heartbeats and the sidecar registry, wired as
// `pennon server` wires them. It keeps its address across restarts so the
// sidecars configured with it find it again.
type controlPlane struct {
	idx  int
	h    *harness
	addr string // host:port, fixed after the first start

	mu     sync.Mutex
	nc     *nats.Conn
	store  *config.Store
	toks   *control.Tokens
	reg    *flagsync.Registry
	srv    *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Counters survive restarts: one figure per replica for the run.
	requests atomic.Int64
	errs     atomic.Int64 // answers ≥ 500 and 429
	busyNs   atomic.Int64 // summed handler wall time
	routeMu  sync.Mutex
	routes   map[string]int64 // by route, and by "route status" for status ≥ 400
}

func (cp *controlPlane) current() (*config.Store, *control.Tokens) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.store, cp.toks
}

// start (re)starts the replica: connect, open the store and tokens, build
// the API, listen (on the same address after a restart) and serve.
//
// JetStream may refuse to place an R3 stream for a moment after the
// cluster formed or a node came back ("no suitable peers for placement":
// the meta leader has not had fresh stats from a peer yet), so that one
// error is retried for up to 30 s; everything start creates is
// create-or-update, so a retry is safe.
//
// A request JetStream never answers (sent while the meta leader changed)
// times out after 10 s per attempt and is retried the same way: on a
// loaded machine (CI, -race) a fresh cluster sometimes loses one.
func (cp *controlPlane) start(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cp.startOnce(ctx)
		retry := err != nil && (strings.Contains(err.Error(), "no suitable peers for placement") || errors.Is(err, context.DeadlineExceeded))
		if !retry || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (cp *controlPlane) startOnce(ctx context.Context) error {
	h := cp.h
	nc, err := h.cluster.Connect(cp.idx%h.cluster.Len(), nats.Name(fmt.Sprintf("fleet-control-%d", cp.idx)))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	fail := func(err error) error { nc.Close(); return err }
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	defer ocancel()
	store, err := config.OpenStore(octx, js, config.StoreOptions{Replicas: 3, Signer: h.key, Trust: h.trust, Logger: h.o.Logger})
	if err != nil {
		return fail(err)
	}
	toks, err := control.OpenTokens(octx, js, 3, nil)
	if err != nil {
		return fail(fmt.Errorf("open tokens: %w", err))
	}
	reg, err := flagsync.NewRegistry(nc, flagsync.RegistryOptions{Verifier: h.cluster.Keys, Envs: store.EnvNames, Logger: h.o.Logger})
	if err != nil {
		return fail(fmt.Errorf("sidecar registry: %w", err))
	}
	addr := cp.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	api, err := control.New(control.Options{Addr: addr, Store: store, Tokens: toks, Sidecars: reg, JetStream: js, Replicas: 3,
		NATS: h.cluster.Keys, Signer: h.key, Trust: h.trust, Logger: h.o.Logger})
	if err != nil {
		_ = reg.Close()
		return fail(err)
	}
	ln, err := listen(ctx, addr)
	if err != nil {
		_ = reg.Close()
		return fail(err)
	}
	cp.addr = ln.Addr().String()
	srv := &http.Server{Handler: cp.count(api.Handler()), ReadHeaderTimeout: 10 * time.Second}
	rctx, cancel := context.WithCancel(context.Background())
	cp.mu.Lock()
	cp.nc, cp.store, cp.toks, cp.reg, cp.srv, cp.cancel = nc, store, toks, reg, srv, cancel
	cp.mu.Unlock()
	cp.wg.Add(2)
	go func() { defer cp.wg.Done(); _ = srv.Serve(ln) }()
	go func() {
		defer cp.wg.Done()
		flagsync.RunHeartbeats(rctx, nc, store, h.o.Heartbeat, h.o.Logger)
	}()
	return nil
}

// listen binds addr, retrying briefly: the port of a replica that just
// stopped may not be free at once.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the replica abruptly (open connections are closed, as in a
// crash or a rolling restart without draining), then its heartbeats,
// registry and NATS connection.
func (cp *controlPlane) stop() {
	cp.mu.Lock()
	srv, cancel, reg, nc, store := cp.srv, cp.cancel, cp.reg, cp.nc, cp.store
	cp.srv, cp.cancel, cp.reg, cp.nc, cp.store, cp.toks = nil, nil, nil, nil, nil, nil
	cp.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	cancel()
	cp.wg.Wait()
	_ = reg.Close()
	// The replica's due KV snapshot: written or given up within 5 s
	// before its connection goes, as a stopping control plane does.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = store.Close(sctx)
	scancel()
	nc.Close()
}

// count wraps the API: requests by route, errors, handler wall time.
func (cp *controlPlane) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		cp.busyNs.Add(int64(time.Since(start)))
		cp.requests.Add(1)
		if sw.code >= 500 || sw.code == http.StatusTooManyRequests {
			cp.errs.Add(1)
		}
		route := routeOf(r)
		cp.routeMu.Lock()
		cp.routes[route]++
		if sw.code >= 400 {
			// Failures by route and status, e.g. "/api/v1/envs/{env}/snapshot 503".
			cp.routes[fmt.Sprintf("%s %d", route, sw.code)]++
		}
		cp.routeMu.Unlock()
	})
}

// routeOf names a request by its mux pattern without the method and with
// the environment left as a placeholder, e.g. "/api/v1/envs/{env}/snapshot".
func routeOf(r *http.Request) string {
	p := r.Pattern
	if p == "" {
		p = r.URL.Path
		if rest, ok := strings.CutPrefix(p, "/api/v1/envs/"+Env); ok {
			p = "/api/v1/envs/{env}" + rest
		}
	}
	if _, path, ok := strings.Cut(p, " "); ok {
		p = path
	}
	return p
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
