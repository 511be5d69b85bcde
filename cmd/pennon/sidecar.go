package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
)

func init() {
	register(command{name: "sidecar", summary: "serve flags to the local app over OFREP (from a file, hot-reloaded)", run: runSidecar})
}

// sidecarOptions are the sidecar's settings.
type sidecarOptions struct {
	addr, file, logFormat, logLevel string
	allowRemote                     bool
	maxBody                         int
	cacheMB                         int
	reload, drain                   time.Duration
}

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sidecar", "pennon sidecar --file flags.json [--addr 127.0.0.1:8016]",
		"Runs the per-pod sidecar: evaluates flags locally and answers OpenFeature OFREP requests\n"+
			"on localhost. The flag file is reloaded when it changes; an invalid file is rejected whole\n"+
			"and the previous flags keep serving (see /v1/status).", stderr)
	var o sidecarOptions
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8016", "listen address (loopback unless --allow-remote)")
	fs.StringVar(&o.file, "file", "", "flag document to serve (flagd JSON format)")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow listening on a non-loopback address")
	fs.IntVar(&o.maxBody, "max-body-bytes", 64<<10, "largest accepted request body")
	fs.IntVar(&o.cacheMB, "cache-mb", 16, "response cache size in MiB (0 disables)")
	fs.DurationVar(&o.reload, "reload-interval", time.Second, "how often to check the flag file for changes")
	fs.DurationVar(&o.drain, "drain-timeout", 5*time.Second, "how long shutdown waits for in-flight requests")
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
	if o.file == "" {
		return fmt.Errorf("--file is required: the flag document to serve (try examples/checkout.json)")
	}
	return serveSidecar(ctx, o, log, nil)
}

// serveSidecar runs a file-backed sidecar until ctx ends. ready, if not
// nil, receives the bound address once listening (used by dev and tests).
func serveSidecar(ctx context.Context, o sidecarOptions, log *zap.Logger, ready chan<- string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src, err := flagsync.NewFileSource(flagsync.FileOptions{Path: o.file, Interval: o.reload, Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	cache := int64(o.cacheMB) << 20
	if o.cacheMB == 0 {
		cache = -1
	}
	srv, err := proxy.New(proxy.Options{Addr: o.addr, AllowRemote: o.allowRemote, Source: src, SourceName: "file:" + o.file,
		Logger: log, Registry: reg, MaxBodyBytes: o.maxBody, CacheBytes: cache, DrainTimeout: o.drain})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if ready != nil {
		ready <- srv.Addr()
	}
	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); src.Run(wctx) }()
	err = srv.Serve(ctx)
	stopWatch()
	wg.Wait()
	return err
}
