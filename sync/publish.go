package flagsync

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
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
			b, _ := json.Marshal(config.Heartbeat{Env: e.Name, Version: head.Version, Hash: head.Hash, Time: time.Now().UTC()})
			_ = nc.Publish(config.HeartbeatSubject(e.Name), b)
		}
	}
}

// Registry remembers what each sidecar reported, so the control plane can
// answer "who serves which version, and who is behind". Sidecars silent for
// longer than Expiry are dropped.
type Registry struct {
	Expiry time.Duration
	sub    *nats.Subscription
	mu     sync.Mutex
	byEnv  map[string]map[string]config.SidecarReport
}

// NewRegistry subscribes to every environment's sidecar reports.
func NewRegistry(nc *nats.Conn) (*Registry, error) {
	r := &Registry{Expiry: 30 * time.Second, byEnv: map[string]map[string]config.SidecarReport{}}
	sub, err := nc.Subscribe("pennon.*.sidecars", func(m *nats.Msg) {
		var rep config.SidecarReport
		if json.Unmarshal(m.Data, &rep) != nil || rep.ID == "" || rep.Env == "" {
			return
		}
		r.mu.Lock()
		if r.byEnv[rep.Env] == nil {
			r.byEnv[rep.Env] = map[string]config.SidecarReport{}
		}
		rep.Time = time.Now().UTC() // our clock decides expiry
		r.byEnv[rep.Env][rep.ID] = rep
		r.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	r.sub = sub
	return r, nil
}

// List returns the live sidecars of env, sorted by ID.
func (r *Registry) List(env string) []config.SidecarReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []config.SidecarReport{}
	for id, rep := range r.byEnv[env] {
		if time.Since(rep.Time) > r.Expiry {
			delete(r.byEnv[env], id)
			continue
		}
		out = append(out, rep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close stops listening.
func (r *Registry) Close() error { return r.sub.Unsubscribe() }
