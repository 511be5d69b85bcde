package main

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	flagusage "github.com/pennon-dev/pennon/usage"
)

// openUsage starts the usage aggregator (docs/usage.md): it follows the
// usage telemetry stream from where its persisted rollups end, serves
// GET /api/v1/envs/{env}/usage and .../anomalies, and checks every flag's
// served distribution against its baseline once a minute.
func openUsage(ctx context.Context, rs *runningServer, js jetstream.JetStream, o serverOptions, log *zap.Logger, reg prometheus.Registerer) (*flagusage.Aggregator, error) {
	return flagusage.Open(ctx, flagusage.Options{JetStream: js, Ingest: rs.Telemetry, Replicas: o.replicas, Changes: rs.Store, Emitter: rs.Notify, Logger: log, Metrics: reg})
}
