// Package control is pennon's control plane: the admin HTTP API over the
// versioned store, API tokens with roles per environment, and the metrics
// an operator watches. It is the source of truth sidecars follow; it never
// evaluates flags for applications.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/lifecycle"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage"
)

// SidecarLister answers "which sidecars serve which version".
type SidecarLister interface {
	List(env string) []config.SidecarReport
}

// Options configure the control-plane server.
type Options struct {
	Addr     string // default 127.0.0.1:8080
	Store    *config.Store
	Tokens   *Tokens
	Logger   *zap.Logger
	Registry *prometheus.Registry
	Sidecars SidecarLister // optional
	// Notify receives the control plane's events (changes, approvals
	// needed, emergencies, out-of-hours changes) and serves the webhook and
	// event routes; nil: no events, and those routes answer 501.
	Notify *notify.Dispatcher
	// Telemetry stores sidecars' telemetry batches sent over the API
	// (optional: without it the route answers 501).
	Telemetry *telemetry.Ingest
	// Experiments answers the experiment reports (optional: without it
	// those routes answer 501).
	Experiments ExperimentReader
	// Usage aggregates the sidecars' usage reports and detects anomalies
	// (optional: without it the usage and anomaly routes answer 501).
	Usage *usage.Aggregator
	// JetStream holds change requests, reviews and the audit stream. Required.
	JetStream jetstream.JetStream
	Replicas  int
	// MaxBodyBytes bounds request bodies; default 1 MiB.
	MaxBodyBytes int64
	// Signer signs audit entries and checkpoints (the same key the store
	// signs changesets with); Trust verifies them (current + retired keys).
	Signer *sign.Key
	Trust  *sign.Trust
	// DataDir, when set, is a directory only this control plane can write
	// (not reachable through NATS): the audit anchor lives there.
	DataDir string
	// NATS mints sidecars' NATS credentials (nil: the credentials endpoint
	// answers 501 and sidecars can only poll). *natsauth.Keys implements it.
	NATS NATSIssuer
	// SidecarCredentialTTL is how long minted sidecar credentials live;
	// default 1h. Sidecars renew them before they expire.
	SidecarCredentialTTL time.Duration
	// Lifecycle builds lifecycle reports and runs the periodic check (its
	// owner calls Run). Optional: without it the report is built from the
	// store alone and says "usage unknown".
	Lifecycle *lifecycle.Service
	// Incidents keeps incident records (optional: without it the incident
	// routes answer 501).
	Incidents *ledger.Ledger
}

// Server is the admin API.
type Server struct {
	o   Options
	log *zap.Logger
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener

	requests  *prometheus.CounterVec
	commits   *prometheus.CounterVec
	emergency prometheus.Counter
	approvals *prometheus.CounterVec

	flow  *workflow
	audit *AuditLog
	emerg jetstream.KeyValue // emergency index
	trust *sign.Trust        // verifies audit signatures and changeset anchors

	denials          *denyLimiter
	deniesSuppressed prometheus.Counter
	tokenStoreDown   atomic.Bool // logged once per outage, not per request

	credentials *prometheus.CounterVec

	// patterns are the routes registered, in order (the OpenAPI document
	// is checked against them).
	patterns []string
}

// Denials from one token get their own audit entry up to denyLimit per
// denyWindow; the rest are summarised in one entry per window.
const (
	denyLimit     = 10
	denyWindowLen = time.Minute
)

// New builds the server; Listen and Serve run it.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Tokens == nil || o.JetStream == nil {
		return nil, errors.New("control: Options.Store, Options.Tokens and Options.JetStream are required")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8080"
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_control_requests_total", Help: "Admin API requests by route and status."}, []string{"route", "code"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_control_writes_total",
			Help: "Write attempts by outcome: committed, conflict, invalid, forbidden."}, []string{"env", "outcome"}),
		emergency: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_emergency_changes_total", Help: "Emergency changes applied directly to protected environments."}),
	}
	s.approvals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_change_requests_total", Help: "Change requests by outcome: opened, approved, rejected."}, []string{"env", "outcome"})
	s.credentials = newCredentialsCounter()
	o.Registry.MustRegister(s.requests, s.commits, s.emergency, s.approvals, s.credentials)
	s.deniesSuppressed = prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_audit_denials_suppressed_total",
		Help: "Denied requests not audited one by one because their token exceeded the per-minute limit (each window gets one summary entry)."})
	o.Registry.MustRegister(s.deniesSuppressed)
	s.denials = newDenyLimiter(denyLimit, denyWindowLen)
	if o.Signer == nil {
		k, err := sign.Generate()
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		o.Signer, s.o.Signer = k, k
		s.log.Warn("no signing key configured: audit entries are signed with a throw-away key, so audit verify fails after a restart; configure Options.Signer")
	}
	s.trust = trustFor(o.Signer, o.Trust)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if s.flow, err = openWorkflow(ctx, o.JetStream, o.Replicas); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	cpPath := ""
	if o.DataDir != "" {
		cpPath = filepath.Join(o.DataDir, CheckpointFile)
	}
	if s.audit, err = OpenAuditLog(ctx, o.JetStream, AuditLogOptions{Replicas: o.Replicas, Signer: o.Signer, Trust: s.trust, CheckpointPath: cpPath, Logger: o.Logger}); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if s.emerg, err = openEmergencies(ctx, o.JetStream, o.Replicas); err != nil {
		return nil, fmt.Errorf("control: emergency index: %w", err)
	}
	// Reading the whole audit chain can outlast the 10 s above on a large
	// installation; progress is logged.
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer ccancel()
	if err := s.catchUp(cctx); err != nil {
		return nil, fmt.Errorf("control: start-up reconciliation: %w", err)
	}
	s.routes()
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}
	return s, nil
}

// Handler exposes the router (tests).
func (s *Server) Handler() http.Handler { return s.mux }

// Listen binds the address.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("control: listen %s: %w", s.o.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address after Listen.
func (s *Server) Addr() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.o.Addr
}

// Serve runs until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	go s.flushDenials(fctx)
	s.log.Info("control plane listening", zap.String("addr", s.Addr()))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-errc
	return err
}

// principal is the authenticated caller of a request.
type principal struct{ tok *TokenRecord }

type handler func(w http.ResponseWriter, r *http.Request, p principal) error

// route registers pattern with an auth requirement: need is the role
// required in the request's {env} (or anywhere when the route has none).
func (s *Server) route(pattern, name string, need Role, h handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() { s.requests.WithLabelValues(name, strconv.Itoa(rec.code)).Inc() }()
		r.Body = http.MaxBytesReader(rec, r.Body, s.o.MaxBodyBytes)
		var p principal
		if need != RoleNone {
			tok, err := s.authenticate(r)
			if err != nil {
				writeErr(rec, err)
				return
			}
			p.tok = tok
			env := r.PathValue("env")
			have := tok.MaxRole()
			switch {
			case env != "":
				have = tok.RoleIn(env)
			case need == RoleAdmin:
				have = tok.RoleIn("*") // global administration needs admin on every env
			}
			if have < need {
				where := "any environment"
				if env != "" {
					where = "environment " + env
				}
				writeErr(rec, s.deny(r.Context(), p, "deny", env, name, map[string]any{"need": need.String(), "have": have.String()},
					newErr(CodeForbidden, "token %s (%s) has role %s in %s; %s needs %s", tok.ID, tok.Name, have, where, name, need)))
				return
			}
		}
		if err := h(rec, r, p); err != nil {
			writeErr(rec, err)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

func (s *Server) authenticate(r *http.Request) (*TokenRecord, error) {
	// RFC 9110: the scheme is case-insensitive ("bearer", "BEARER" are fine).
	scheme, tok, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, newErr(CodeUnauthorized, "missing bearer token: send Authorization: Bearer <token>")
	}
	ctx, cancel := context.WithTimeout(r.Context(), authTimeout)
	defer cancel()
	rec, err := s.o.Tokens.Authenticate(ctx, tok)
	switch {
	case errors.Is(err, ErrTokenStoreUnavailable):
		if s.tokenStoreDown.CompareAndSwap(false, true) {
			s.log.Warn("tokens cannot be checked: store unreachable; answering 503 until it is back", zap.Error(err))
		}
		return nil, newErr(CodeUnavailable, "cannot check the token: the token store (NATS) is unreachable; retry shortly")
	case err != nil:
		return nil, newErr(CodeUnauthorized, "%v", err)
	}
	if s.tokenStoreDown.CompareAndSwap(true, false) {
		s.log.Info("token store reachable again")
	}
	return rec, nil
}

// authTimeout bounds the token lookup so a store outage answers 503 within
// a few seconds rather than holding the request for JetStream's default.
const authTimeout = 3 * time.Second

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func queryUint(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fieldErr(CodeBadRequest, name, "query %s=%q: must be a non-negative integer", name, v)
	}
	return n, nil
}

// actor names a principal in the audit log and in changesets.
func (p principal) actor() string {
	if p.tok == nil {
		return "anonymous"
	}
	return p.tok.Name + " (" + p.tok.ID + ")"
}

// queryUints parses several optional non-negative integer query parameters.
func queryUints(r *http.Request, names ...string) ([]uint64, error) {
	out := make([]uint64, len(names))
	for i, n := range names {
		v, err := queryUint(r, n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}
