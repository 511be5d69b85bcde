package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/flagdgrpc"
	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
)

func init() {
	register(command{name: "sidecar", summary: "serve flags to the local app over OFREP (from a file, or following an environment)", run: runSidecar})
}

// sidecarOptions are the sidecar's settings.
type sidecarOptions struct {
	addr, file, logFormat, logLevel string
	healthAddr                      string
	// flagd's gRPC services (flagdgrpc); empty disables each
	grpcAddr, syncAddr string
	// remote mode
	env, server, natsURL, token, stateDir, defaults string
	tokenFile, natsCA                               string
	poll                                            time.Duration
	allowRemote                                     bool
	maxBody                                         int
	cacheMB                                         int
	flagSeries                                      int
	reload, drain                                   time.Duration
	targetingBudget                                 time.Duration
	overloadInFlight                                int
	experimentUnits                                 int // units (targeting keys) remembered for experiments
	// evaluate is the OFREP server's flag evaluation (set by serveSidecar),
	// so flagd's gRPC services degrade targeting exactly as OFREP does.
	evaluate func(*evaluator.Snapshot, *evaluator.Flag, *evaluator.Context) evaluator.Result
	// remote mode: pinned signing keys (sidecar_trust.go)
	trustKeys    listFlag
	trustKeyFile string
}

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sidecar", "pennon sidecar --file flags.json [--addr 127.0.0.1:8016]",
		"Runs the per-pod sidecar: evaluates flags locally and answers OpenFeature OFREP requests\n"+
			"on localhost. The flag file is reloaded when it changes; an invalid file is rejected whole\n"+
			"and the previous flags keep serving (see /v1/status).", stderr)
	var o sidecarOptions
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8016", "listen address (loopback unless --allow-remote)")
	fs.StringVar(&o.file, "file", "", "flag document to serve (flagd JSON format); or use --env for remote mode")
	fs.StringVar(&o.env, "env", "", "remote mode: environment to follow")
	fs.StringVar(&o.server, "server", "http://127.0.0.1:8080", "remote mode: control plane URL")
	fs.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:4222", "remote mode: NATS URL for pushed changes (empty: poll only)")
	fs.StringVar(&o.token, "token", "", "remote mode: API token (a viewer token is enough); prefer --token-file or PENNON_TOKEN: a command line is visible in ps")
	fs.StringVar(&o.tokenFile, "token-file", "", "remote mode: read the API token from this file (e.g. a mounted Kubernetes Secret)")
	fs.Var(&o.trustKeys, "trust-key", "remote mode: pin the control plane's signing key, ed25519:... (repeatable; during a rotation give old and new); without it the keys are fetched from the control plane on first use")
	fs.StringVar(&o.trustKeyFile, "trust-key-file", "", "remote mode: pin the signing keys listed in this file (one ed25519:... per line)")
	fs.StringVar(&o.natsCA, "nats-ca", "", "remote mode: PEM file of the CAs that sign the NATS servers' TLS certificates")
	fs.StringVar(&o.stateDir, "state-dir", "", "remote mode: directory for the last-known-good copy")
	fs.StringVar(&o.defaults, "defaults", "", "remote mode: secure defaults flag file, served when nothing else is available")
	fs.DurationVar(&o.poll, "poll-interval", 5*time.Second, "remote mode: polling interval when push is down (± 20% jitter)")
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:8013", "flagd evaluation service (gRPC, for flagd providers in RPC mode); empty disables it")
	fs.StringVar(&o.syncAddr, "sync-addr", "127.0.0.1:8015", "flagd sync service (gRPC, for flagd providers in in-process mode); empty disables it")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow listening on a non-loopback address")
	fs.StringVar(&o.healthAddr, "health-addr", "", "optional second listener for /healthz, /readyz and /metrics only (for kubelet probes and Prometheus), e.g. 0.0.0.0:8017")
	fs.IntVar(&o.maxBody, "max-body-bytes", 64<<10, "largest accepted request body")
	fs.IntVar(&o.cacheMB, "cache-mb", 16, "response cache size in MiB (0 disables)")
	fs.IntVar(&o.flagSeries, "metrics-flag-series", proxy.DefaultMaxFlagSeries, "most (flag, variant, reason) series of pennon_evaluations_total; evaluations past it count under flag=\"_other\"")
	fs.DurationVar(&o.reload, "reload-interval", time.Second, "fallback check of the flag file (changes are seen at once through inotify on its directory; this catches anything inotify misses)")
	fs.DurationVar(&o.drain, "drain-timeout", 5*time.Second, "how long shutdown waits for in-flight requests")
	fs.DurationVar(&o.targetingBudget, "targeting-budget", 50*time.Microsecond, "evaluation budget of flags with fallbackTargeting: above it (sampled) they serve their fallback rule")
	fs.IntVar(&o.experimentUnits, "experiment-max-units", experiment.DefaultMaxUnits, "units (targeting keys) remembered to join tracked events to experiment exposures (~100 bytes each); units beyond are not enrolled and are counted")
	fs.IntVar(&o.overloadInFlight, "overload-inflight", 256, "above this many OFREP requests in flight the sidecar is overloaded: flags with fallbackTargeting serve it")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.String("config", "", "YAML file with any of these settings")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
	switch {
	case o.flagSeries < 1:
		return fmt.Errorf("--metrics-flag-series must be at least 1 (got %d): it caps the per-flag series of pennon_evaluations_total", o.flagSeries)
	case o.cacheMB < 0:
		return fmt.Errorf("--cache-mb must be 0 (off) or more (got %d)", o.cacheMB)
	case o.file != "" && o.env != "":
		return fmt.Errorf("--file and --env exclude each other: serve a file, or follow an environment")
	case o.file == "" && o.env == "":
		return fmt.Errorf("--file is required: the flag document to serve (try examples/checkout.json), or --env ENV --server URL --token T for remote mode")
	case o.env != "" && o.token != "" && o.tokenFile != "":
		return fmt.Errorf("--token and --token-file exclude each other")
	case o.env != "" && o.tokenFile != "":
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if o.token = strings.TrimSpace(string(b)); o.token == "" {
			return fmt.Errorf("--token-file %s is empty", o.tokenFile)
		}
	case o.env != "" && o.token == "":
		return fmt.Errorf("--token (or --token-file) is required in remote mode (a viewer token for environment %s)", o.env)
	}
	if givenOnCommandLine(args, "token") {
		log.Warn("the API token was given with --token on the command line, where any process can read it (ps); use --token-file or PENNON_TOKEN instead")
	}
	// Memory (sidecar_memory.go): the GC target for loading the flag set,
	// then once listening with it loaded the one for serving, and what
	// start-up used and serving never uses again.
	applyStartupGC()
	ready := make(chan string, 1)
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-ready:
			releaseStartupMemory(log)
		case <-served:
		}
	}()
	return serveSidecar(ctx, o, log, ready)
}

// serveSidecar runs a file-backed sidecar until ctx ends. ready, if not
// nil, receives the bound address once listening (used by dev and tests).
func serveSidecar(ctx context.Context, o sidecarOptions, log *zap.Logger, ready chan<- string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src, run, name, err := sidecarSource(o, log, reg)
	if err != nil {
		return err
	}
	cache := int64(o.cacheMB) << 20
	if o.cacheMB == 0 {
		cache = -1
	}
	// Experiment exposures and tracked events are joined in remote mode,
	// where a control plane receives them.
	var exps *experiment.Recorder
	var joiner proxy.ExperimentRecorder // stays a nil interface in file mode
	if _, remote := src.(*flagsync.Remote); remote {
		exps = experiment.NewRecorder(o.experimentUnits)
		joiner = exps
	}
	srv, err := proxy.New(proxy.Options{Experiments: joiner, Addr: o.addr, AllowRemote: o.allowRemote, Source: src, SourceName: name, HealthAddr: o.healthAddr,
		Logger: log, Registry: reg, MaxBodyBytes: o.maxBody, CacheBytes: cache, DrainTimeout: o.drain,
		TargetingBudget: o.targetingBudget, OverloadInFlight: o.overloadInFlight, MaxFlagSeries: o.flagSeries})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	o.evaluate = srv.EvaluateFlag
	grpcSrv, err := flagdServices(o, src, name, log, reg)
	if err != nil {
		return err
	}
	if ready != nil {
		ready <- srv.Addr()
	}
	var wg sync.WaitGroup
	// Sync outlives the drain: it stops after the server and the last
	// telemetry delivery (which uses its NATS connection), not with ctx.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() { defer wg.Done(); run(wctx) }()
	// The gRPC services live as long as the OFREP server; if they fail, the
	// sidecar stops rather than serve one protocol silently.
	sctx, stopServe := context.WithCancel(ctx)
	var grpcErr error
	if grpcSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if grpcErr = grpcSrv.Serve(sctx); grpcErr != nil {
				stopServe()
			}
		}()
	}
	sources := sidecarTelemetry(srv, src, log)
	if exps != nil {
		sources = append(sources, exps)
	}
	stopShipper, err := startShipper(ctx, src, sources, log, reg)
	if err != nil {
		stopServe()
		stopWatch()
		wg.Wait()
		return err
	}
	err = srv.Serve(sctx)
	stopServe()
	// Telemetry gets its last delivery while sync (and its NATS connection)
	// still runs.
	stopShipper()
	stopWatch()
	wg.Wait()
	if err == nil {
		err = grpcErr
	}
	return err
}

// flagdServices builds flagd's gRPC services (nil when both are disabled)
// and binds their ports. The sync service needs the flag document: a source
// that keeps it is used directly; a file is read again on every change; a
// source with neither runs without the sync service and says so once.
func flagdServices(o sidecarOptions, src proxy.Source, name string, log *zap.Logger, reg prometheus.Registerer) (*flagdgrpc.Server, error) {
	if o.grpcAddr == "" && o.syncAddr == "" {
		return nil, nil
	}
	fo := flagdgrpc.Options{EvalAddr: o.grpcAddr, SyncAddr: o.syncAddr, AllowRemote: o.allowRemote, Source: src,
		SourceName: name, Logger: log, DrainTimeout: o.drain, Registry: reg, EvaluateFlag: o.evaluate}
	if _, ok := src.(flagdgrpc.DocumentSource); !ok {
		switch {
		case o.file != "":
			// Also used by the evaluation service: with the document, its
			// change events name only the flags that changed.
			docs, err := flagdgrpc.NewFileDocuments(src, o.file)
			if err != nil {
				return nil, err
			}
			fo.Documents = docs
		case o.syncAddr != "":
			log.Warn("flagd sync service disabled: this flag source does not expose its document", zap.String("source", name), zap.String("sync-addr", o.syncAddr))
			fo.SyncAddr = ""
			if fo.EvalAddr == "" {
				return nil, nil
			}
		}
	}
	g, err := flagdgrpc.New(fo)
	if err != nil {
		return nil, err
	}
	if err := g.Listen(); err != nil {
		return nil, err
	}
	return g, nil
}

// sidecarSource picks the flag source: a watched file, or an environment
// followed through the control plane and NATS.
func sidecarSource(o sidecarOptions, log *zap.Logger, reg prometheus.Registerer) (proxy.Source, func(context.Context), string, error) {
	if o.env == "" {
		src, err := flagsync.NewFileSource(flagsync.FileOptions{Path: o.file, Interval: o.reload, Logger: log, Registry: reg})
		if err != nil {
			return nil, nil, "", err
		}
		return src, src.Run, "file:" + o.file, nil
	}
	pins, err := o.pinnedKeys()
	if err != nil {
		return nil, nil, "", err
	}
	r, err := flagsync.NewRemote(flagsync.RemoteOptions{TrustKeys: pins, Env: o.env, ServerURL: o.server, NATSURL: o.natsURL, NATSCA: o.natsCA, Token: o.token,
		StateDir: o.stateDir, Defaults: o.defaults, PollInterval: o.poll, Logger: log, Registry: reg})
	if err != nil {
		return nil, nil, "", err
	}
	run := func(ctx context.Context) {
		if err := r.Run(ctx); err != nil {
			log.Error("sync stopped", zap.Error(err))
		}
	}
	return r, run, "env:" + o.env + "@" + o.server, nil
}
