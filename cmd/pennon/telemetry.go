package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
	"github.com/pennon-dev/pennon/telemetry"
)

// openTelemetry opens the telemetry streams and, when this control plane
// mints sidecar NATS credentials (and so can check which subject belongs to
// which sidecar), answers sidecars' batches over NATS. Without that, the
// API path (POST /api/v1/envs/{env}/telemetry) still works.
func openTelemetry(ctx context.Context, rs *runningServer, nc *nats.Conn, js jetstream.JetStream, o serverOptions, log *zap.Logger, reg prometheus.Registerer) (*telemetry.Ingest, error) {
	io := telemetry.IngestOptions{Replicas: o.replicas, Logger: log, Metrics: reg,
		EnvExists: func(ctx context.Context, env string) bool { _, err := rs.Store.Env(ctx, env); return err == nil }}
	if rs.NATSKeys != nil {
		io.ReportToken = rs.NATSKeys.ReportToken
	}
	ing, err := telemetry.OpenIngest(ctx, js, io)
	if err != nil {
		return nil, err
	}
	if rs.NATSKeys != nil {
		if err := ing.Listen(nc); err != nil {
			return nil, err
		}
	}
	return ing, nil
}

// sidecarTelemetry lists what this sidecar reports besides its sync state.
// Each producer (usage counts, incident records, experiment aggregates)
// adds its source here.
func sidecarTelemetry(srv *proxy.Server, src proxy.Source, log *zap.Logger) []telemetry.Source {
	var sources []telemetry.Source
	if u := srv.UsageSource(); u != nil { // usage counts (docs/usage.md)
		sources = append(sources, u)
	}
	if rec := sidecarIncidents(srv, src, log); rec != nil {
		sources = append(sources, rec)
	}
	return sources
}

// startShipper ships the sidecar's telemetry to the control plane it
// follows (file mode has none: nothing is shipped). The returned stop
// collects and delivers one last time (bounded) and waits.
func startShipper(ctx context.Context, src proxy.Source, sources []telemetry.Source, log *zap.Logger, reg prometheus.Registerer) (stop func(), err error) {
	r, ok := src.(*flagsync.Remote)
	if !ok || len(sources) == 0 {
		return func() {}, nil
	}
	sh, err := telemetry.NewShipper(telemetry.TransportFunc(r.SendTelemetry),
		telemetry.ShipperOptions{Env: r.Env(), Sidecar: r.ID(), Logger: log, Metrics: reg}, sources...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	// Not cancelled with ctx: the shipper stops after the server drained,
	// so the answers served while draining are counted and shipped too.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sh.Run(sctx) }()
	return func() { cancel(); wg.Wait() }, nil
}
