package flagsync

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
)

// RunHeartbeats publishes every environment's head version and hash every
// interval until ctx ends: a sidecar that hears its own version holds a
// freshness lease; one that hears a newer version knows it missed a change.
func RunHeartbeats(ctx context.Context, nc *nats.Conn, store *config.Store, interval time.Duration, log *zap.Logger) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		envs, err := store.Envs(ctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				log.Warn("heartbeats paused: store unavailable", zap.Error(err))
			}
			failing = true
			continue
		}
		if failing {
			log.Info("heartbeats resumed")
			failing = false
		}
		for _, e := range envs {
			head, err := store.Head(ctx, e.Name)
			if err != nil {
				continue
			}
			hb := config.Heartbeat{Env: e.Name, Version: head.Version, Hash: head.Hash, Time: time.Now().UTC()}
			store.SignHeartbeat(&hb) // a forged heartbeat must not grant a stale sidecar a lease
			b, _ := json.Marshal(hb)
			_ = nc.Publish(config.HeartbeatSubject(e.Name), b)
		}
	}
}
