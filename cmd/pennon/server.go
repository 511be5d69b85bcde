package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/natsauth"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/notify"
	flagsync "github.com/pennon-dev/pennon/sync"
	"github.com/pennon-dev/pennon/telemetry"
	flagusage "github.com/pennon-dev/pennon/usage"
)

func init() {
	register(command{name: "server", summary: "run the control plane (admin API + versioned store on NATS JetStream)", run: runServer})
}

// serverOptions are the control plane's settings.
type serverOptions struct {
	addr, data, natsURL, natsAddr string
	// External NATS: the control plane's own credentials, the account seed
	// it mints sidecar credentials with, and the CA for TLS.
	natsCreds, natsAccountSeed, natsCA string
	// Embedded NATS: TLS certificate and key (optional).
	natsTLSCert, natsTLSKey string
	sidecarCredsTTL         time.Duration
	sidecarLostAfter        time.Duration
	replicas, snapshotEvery int
	adminTokenFile          string
	envs                    []string // name or name:protected
	heartbeat               time.Duration
	logFormat, logLevel     string
	// Signing key file (default <data>/keys/signing.key) and retired public keys (default retired.pub beside it).
	signingKeyFile, trustedKeysFile string
	adoptUnsigned                   bool // sign the state of streams written before signing (signing.go)
	// GitOps: apply <watchDir>/<env>.json files as changesets (control/gitops.go).
	watchDir   string
	watchEvery time.Duration
	watchPrune bool
}

// runningServer is a started control plane. Close stops it and waits.
type runningServer struct {
	NATS       *natsrun.Server // nil with an external cluster
	NATSKeys   *natsauth.Keys  // mints sidecar credentials; nil: sidecars can only poll
	SigningKey *sign.Key       // signs changesets, snapshots, heartbeats, tokens
	NATSURL    string
	Conn       *nats.Conn
	Store      *config.Store
	Tokens     *control.Tokens
	API        *control.Server
	Usage      *flagusage.Aggregator // usage rollups and anomalies (flagusage.go)
	// Telemetry stores what sidecars report besides their state (usage,
	// incidents, experiments); aggregators follow it.
	Telemetry *telemetry.Ingest
	// Experiments sums sidecars' experiment aggregates.
	Experiments *experiment.Aggregator
	// Incidents keeps incident records (sidecars' and this control plane's).
	Incidents *ledger.Ledger
	// Notify stores events and delivers them to webhooks (notify.go).
	Notify     *notify.Dispatcher
	AdminToken string // set only when created on this start
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	errc       chan error
}

// Close stops the API, heartbeats and NATS, in that order, and waits.
func (r *runningServer) Close() error {
	r.cancel()
	r.wg.Wait()
	err := <-r.errc
	r.closeNotify()
	if r.Store != nil {
		// The API and heartbeats are stopped: write the due KV snapshot
		// before the connection closes. A failure is the store's to log;
		// the next start replays the log from the previous snapshot.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = r.Store.Close(ctx)
		cancel()
	}
	if r.Conn != nil {
		r.Conn.Close()
	}
	if r.NATS != nil {
		r.NATS.Shutdown()
		r.NATS.WaitForShutdown()
	}
	return err
}

// startServer starts NATS (embedded unless natsURL is set), the store, the
// admin API, heartbeats and the sidecar registry.
func startServer(ctx context.Context, o serverOptions, log *zap.Logger) (*runningServer, error) {
	rs := &runningServer{errc: make(chan error, 1)}
	if o.watchDir != "" {
		if st, err := os.Stat(o.watchDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--watch-dir %s: not a readable directory (%v)", o.watchDir, err)
		}
	}
	url := o.natsURL
	if url == "" {
		host, port, err := splitHostPortNumber(o.natsAddr)
		if err != nil {
			return nil, fmt.Errorf("nats-addr: %w", err)
		}
		if err := os.MkdirAll(o.data, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		keys, created, err := natsauth.LoadOrCreate(filepath.Join(o.data, "nats"))
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("NATS operator and account keys created", zap.String("dir", filepath.Join(o.data, "nats")))
		}
		ns, err := natsrun.Start(natsrun.Options{DataDir: filepath.Join(o.data, "jetstream"), Host: host, Port: port, SyncAlways: true, ServerName: "pennon",
			Keys: keys, TLSCert: o.natsTLSCert, TLSKey: o.natsTLSKey})
		if err != nil {
			return nil, err
		}
		rs.NATS, rs.NATSKeys, url = ns, keys, ns.ClientURL()
		if o.natsTLSCert != "" {
			url = strings.Replace(url, "nats://", "tls://", 1)
		}
		log.Info("embedded NATS JetStream started with authorization (operator mode, no anonymous access)", zap.String("url", url), zap.String("data", o.data), zap.Bool("syncAlways", true), zap.Bool("tls", o.natsTLSCert != ""))
	} else if o.natsAccountSeed != "" {
		if o.natsCreds == "" {
			return nil, fmt.Errorf("--nats-account-seed-file needs --nats-creds (the control plane's own credential names the account)")
		}
		acc, err := natsauth.AccountOfCreds(o.natsCreds)
		if err != nil {
			return nil, err
		}
		keys, err := natsauth.LoadSigning(o.natsAccountSeed, acc)
		if err != nil {
			return nil, err
		}
		rs.NATSKeys = keys
	} else {
		log.Warn("no NATS account seed (--nats-account-seed-file): sidecars get no NATS credentials and can only poll")
	}
	rs.NATSURL = url
	fail := func(err error) (*runningServer, error) {
		if rs.Conn != nil {
			rs.Conn.Close()
		}
		if rs.NATS != nil {
			rs.NATS.Shutdown()
			rs.NATS.WaitForShutdown()
		}
		return nil, err
	}
	copts := []nats.Option{nats.Name("pennon-control"), nats.MaxReconnects(-1)}
	switch {
	case rs.NATS != nil:
		c, err := rs.NATS.ControlCredential()
		if err != nil {
			return fail(err)
		}
		copts = append(copts, nats.UserJWTAndSeed(c.JWT, string(c.Seed)))
	case o.natsCreds != "":
		copts = append(copts, nats.UserCredentials(o.natsCreds))
	}
	if o.natsCA != "" {
		copts = append(copts, nats.RootCAs(o.natsCA))
	}
	nc, err := nats.Connect(url, copts...)
	if err != nil {
		return fail(fmt.Errorf("connect to NATS at %s: %w", flagsync.RedactURL(url), err))
	}
	rs.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	sig, err := loadSigning(o, log)
	if err != nil {
		return fail(err)
	}
	rs.SigningKey = sig.key
	if rs.Store, err = config.OpenStore(ctx, js, config.StoreOptions{Replicas: o.replicas, SnapshotEvery: o.snapshotEvery, Logger: log,
		Signer: sig.key, Trust: sig.trust, OnForeign: sig.onForeign}); err != nil {
		return fail(err)
	}
	if rs.Tokens, err = control.OpenTokens(ctx, js, o.replicas, nil); err != nil {
		return fail(err)
	}
	rs.Tokens.SignWith(sig.key, sig.trust)
	if err := ensureAdminToken(ctx, rs, o, log); err != nil {
		return fail(err)
	}
	for _, spec := range o.envs {
		name, prot := strings.CutSuffix(spec, ":protected")
		err := rs.Store.CreateEnv(ctx, config.EnvSettings{Name: name, Protected: prot})
		if err != nil && !errors.Is(err, config.ErrEnvExists) {
			return fail(fmt.Errorf("env %s: %w", spec, err))
		}
	}
	if o.adoptUnsigned {
		if err := adoptUnsigned(ctx, rs.Store, log); err != nil {
			return fail(err)
		}
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sig.foreign)
	regOpts := flagsync.RegistryOptions{Envs: rs.Store.EnvNames, LostAfter: o.sidecarLostAfter, Logger: log, Metrics: promReg}
	notifier, nerr := openNotify(ctx, js, o, log, promReg)
	if nerr != nil {
		return fail(nerr)
	}
	rs.Notify, regOpts.Notify = notifier, notifier
	if rs.NATSKeys != nil {
		regOpts.Verifier = rs.NATSKeys
	}
	reg, err := flagsync.NewRegistry(nc, regOpts)
	if err != nil {
		return fail(err)
	}
	if rs.Telemetry, err = openTelemetry(ctx, rs, nc, js, o, log, promReg); err != nil {
		return fail(err)
	}
	if rs.Incidents, err = openIncidents(ctx, rs, js, o, log, promReg); err != nil {
		return fail(err)
	}
	if rs.Experiments, err = openExperiments(ctx, rs, js, o, log); err != nil {
		return fail(err)
	}
	apiOpts := control.Options{Addr: o.addr, Store: rs.Store, Tokens: rs.Tokens, Logger: log, Registry: promReg, Sidecars: reg, JetStream: js, Replicas: o.replicas,
		SidecarCredentialTTL: o.sidecarCredsTTL, Signer: sig.key, Trust: sig.trust, DataDir: o.data, Telemetry: rs.Telemetry}
	if rs.NATSKeys != nil {
		apiOpts.NATS = rs.NATSKeys
	}
	if rs.Usage, err = openUsage(ctx, rs, js, o, log, promReg); err != nil {
		return fail(err)
	}
	apiOpts.Usage = rs.Usage
	apiOpts.Incidents = rs.Incidents
	apiOpts.Notify = rs.Notify
	if apiOpts.Lifecycle, err = openLifecycle(rs, log); err != nil {
		return fail(err)
	}
	apiOpts.Experiments = rs.Experiments
	api, err := control.New(apiOpts)
	if err != nil {
		return fail(err)
	}
	if err := api.Listen(); err != nil {
		return fail(err)
	}
	rs.API = api
	runCtx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	rs.wg.Add(1)
	go func() { defer rs.wg.Done(); flagsync.RunHeartbeats(runCtx, nc, rs.Store, o.heartbeat, log) }()
	rs.wg.Add(1)
	go func() { defer rs.wg.Done(); rs.Incidents.Watch(runCtx, nc); rs.Incidents.Close() }()
	rs.wg.Add(1)
	go func() { defer rs.wg.Done(); apiOpts.Lifecycle.Run(runCtx) }()
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		if err := rs.Experiments.Run(runCtx); err != nil {
			log.Error("experiment aggregates stopped", zap.Error(err))
		}
	}()
	go func() { rs.errc <- api.Serve(runCtx); _ = reg.Close(); _ = rs.Usage.Close(); _ = rs.Telemetry.Close() }()
	if o.watchDir != "" {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			_ = api.WatchDir(runCtx, control.WatchOptions{Dir: o.watchDir, Every: o.watchEvery, Prune: o.watchPrune})
		}()
	}
	return rs, nil
}

// ensureAdminToken imports the operator's admin token, or creates one on
// the very first start and hands it back to be printed once.
func ensureAdminToken(ctx context.Context, rs *runningServer, o serverOptions, log *zap.Logger) error {
	admin := map[string]string{"*": "admin"}
	if tok := os.Getenv("PENNON_ADMIN_TOKEN"); tok != "" {
		return rs.Tokens.Import(ctx, strings.TrimSpace(tok), "admin", admin)
	}
	if o.adminTokenFile != "" {
		if b, err := os.ReadFile(o.adminTokenFile); err == nil {
			return rs.Tokens.Import(ctx, strings.TrimSpace(string(b)), "admin", admin)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("admin-token-file: %w", err)
		}
	}
	empty, err := rs.Tokens.Empty(ctx)
	if err != nil || !empty {
		return err
	}
	tok, info, err := rs.Tokens.Create(ctx, "admin", admin, 0, "bootstrap")
	if err != nil {
		return err
	}
	rs.AdminToken = tok
	log.Info("admin token created on first start (printed once on stdout, stored only as a hash)", zap.String("id", info.ID))
	if o.adminTokenFile != "" {
		if err := os.WriteFile(o.adminTokenFile, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("admin-token-file: %w", err)
		}
	}
	return nil
}

func splitHostPortNumber(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("%q: want host:port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return addr[:i], port, nil
}

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if sub, rest, err := pickSubcommand("server", serverSubcommands, args); sub != nil || err != nil {
		if err != nil {
			return err
		}
		return sub(ctx, rest, stdout, stderr)
	}
	fs := newFlagSet("server", "pennon server [--addr 127.0.0.1:8080] [--data ./pennon-data] [--env dev --env production:protected]",
		"Runs the control plane: the admin API and the versioned flag store. By default it embeds a\n"+
			"NATS JetStream server (fsync on every write) with its data in --data; --nats-url uses an\n"+
			"external cluster instead. On first start it prints an admin token once.", stderr)
	var o serverOptions
	var envs listFlag
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "admin API listen address")
	fs.StringVar(&o.data, "data", "./pennon-data", "data directory for the embedded NATS JetStream store")
	fs.StringVar(&o.natsURL, "nats-url", "", "external NATS JetStream cluster URL (disables the embedded server)")
	fs.StringVar(&o.natsAddr, "nats-addr", "127.0.0.1:4222", "where the embedded NATS server listens for sidecars")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "external NATS: the control plane's credentials file (control-plane.creds from `pennon server nats-config`)")
	fs.StringVar(&o.natsAccountSeed, "nats-account-seed-file", "", "external NATS: the PENNON account seed (account.seed from `pennon server nats-config`), to mint sidecar credentials")
	fs.StringVar(&o.natsCA, "nats-ca", "", "external NATS over TLS: PEM file of the CAs that sign the NATS servers' certificates")
	fs.StringVar(&o.natsTLSCert, "nats-tls-cert", "", "embedded NATS: serve TLS with this certificate (PEM)")
	fs.StringVar(&o.natsTLSKey, "nats-tls-key", "", "embedded NATS: the TLS certificate's private key (PEM)")
	fs.DurationVar(&o.sidecarCredsTTL, "sidecar-credentials-ttl", time.Hour, "lifetime of the NATS credentials minted for sidecars (they renew before expiry)")
	fs.DurationVar(&o.sidecarLostAfter, "sidecar-lost-after", 15*time.Second, "a sidecar silent this long is listed as lost")
	fs.IntVar(&o.replicas, "replicas", 1, "JetStream replicas for streams and buckets (3 on a cluster)")
	fs.IntVar(&o.snapshotEvery, "snapshot-every", 20, "write a full snapshot every N changesets")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "read the admin token from this file (or write the generated one there)")
	fs.StringVar(&o.signingKeyFile, "signing-key-file", "", "ed25519 key that signs changesets, snapshots and heartbeats (secret; must exist; default <data>/keys/signing.key, created on first start)")
	fs.BoolVar(&o.adoptUnsigned, "adopt-unsigned", false, "once, when upgrading a store written before changesets were signed: commit each such environment's state as one signed changeset (see docs/security.md)")
	fs.StringVar(&o.trustedKeysFile, "trusted-keys-file", "", "retired public keys still trusted for what they signed, one ed25519:... per line (default retired.pub next to the signing key, if present)")
	fs.Var(&envs, "env", "environment to create if missing (repeatable; name or name:protected)")
	fs.StringVar(&o.watchDir, "watch-dir", "", "GitOps: apply DIR/<env>.json (flagd files, e.g. a ConfigMap mount or a git checkout) as changesets whenever they change (docs/control.md)")
	fs.DurationVar(&o.watchEvery, "watch-every", 5*time.Second, "with --watch-dir: how often the files are checked")
	fs.BoolVar(&o.watchPrune, "watch-prune", false, "with --watch-dir: delete flags and $evaluators a file does not have (default: keep them)")
	fs.DurationVar(&o.heartbeat, "heartbeat", time.Second, "heartbeat interval (freshness leases)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.String("config", "", "YAML file with any of these settings")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	o.envs = envs
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	rs, err := startServer(ctx, o, log)
	if err != nil {
		return err
	}
	switch {
	case rs.AdminToken != "" && o.adminTokenFile != "":
		// Written to the file (0600): it does not also go to stdout, where
		// log collectors would keep it.
		fmt.Fprintf(stdout, "Admin token created and written to %s (stored in pennon only as a hash)\n", o.adminTokenFile)
	case rs.AdminToken != "":
		fmt.Fprintf(stdout, "Admin token (shown once, stored only as a hash):\n  %s\n", rs.AdminToken)
	}
	fmt.Fprintf(stdout, "Control plane: http://%s   NATS: %s\n", rs.API.Addr(), flagsync.RedactURL(rs.NATSURL))
	<-ctx.Done()
	log.Info("shutting down")
	return rs.Close()
}
