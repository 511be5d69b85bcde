package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/notify"
)

// notifyDrain bounds how long a stopping control plane keeps delivering
// queued webhook events before it abandons them (counted in
// pennon_webhook_deliveries_total{outcome="abandoned"}).
const notifyDrain = 5 * time.Second

// openNotify starts the webhook dispatcher every event producer of the
// control plane emits into (commits, change requests, the fleet registry's
// rewinds, usage anomalies, incidents).
func openNotify(ctx context.Context, js jetstream.JetStream, o serverOptions, log *zap.Logger, reg prometheus.Registerer) (*notify.Dispatcher, error) {
	return notify.New(ctx, notify.Options{JetStream: js, Replicas: o.replicas, Logger: log.Named("notify"), Metrics: reg})
}

// closeNotify drains the dispatcher's queues within notifyDrain.
func (r *runningServer) closeNotify() {
	if r.Notify == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyDrain)
	defer cancel()
	_ = r.Notify.Close(ctx)
}
