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
	var names []string // last known environments
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := store.EnvNames(ctx); err == nil {
			names = n
		}
		sent := 0
		var lastErr error
		for _, env := range names {
			// Bounded per environment, so one slow read cannot stall the rest.
			hctx, cancel := context.WithTimeout(ctx, interval)
			head, err := store.Head(hctx, env)
			cancel()
			if err != nil {
				lastErr = err
				// While JetStream elects a new stream leader nothing can be
				// committed, so the head confirmed moments ago is still the
				// truth: keep the fleet's leases alive through it instead of
				// dropping every sidecar to polling.
				if head = store.RecentHead(env, heartbeatGrace); head == nil {
					continue
				}
			}
			hb := config.Heartbeat{Env: env, Version: head.Version, Hash: head.Hash, Time: time.Now().UTC()}
			store.SignHeartbeat(&hb) // a forged heartbeat must not grant a stale sidecar a lease
			b, _ := json.Marshal(hb)
			_ = nc.Publish(config.HeartbeatSubject(env), b)
			sent++
		}
		switch {
		case sent == 0 && len(names) > 0 && !failing && ctx.Err() == nil:
			log.Warn("heartbeats paused: store unavailable", zap.Error(lastErr))
			failing = true
		case sent > 0 && failing:
			log.Info("heartbeats resumed")
			failing = false
		}
	}
}

// heartbeatGrace is how long a head confirmed against the stream keeps
// being announced while the stream cannot be read (a leader election takes
// a few seconds).
const heartbeatGrace = 5 * time.Second
