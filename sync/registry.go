package flagsync

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
)

// ReportVerifier binds report subjects to sidecar IDs
// (*natsauth.Keys implements it).
type ReportVerifier interface {
	ReportToken(env, sidecarID string) string
}

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Verifier checks that a report arrived on the subject its sidecar's
	// credentials allow: a sidecar can only speak for itself. Required.
	Verifier ReportVerifier
	// Envs lists existing environments; reports for others are dropped.
	// Called at most every few seconds. Required.
	Envs func(ctx context.Context) ([]string, error)
	// LostAfter: a sidecar silent this long is listed as lost; default 15s.
	LostAfter time.Duration
	// ForgetAfter: a lost sidecar is dropped after this long; default 1h.
	ForgetAfter time.Duration
	// MaxSidecars bounds memory: when full, the longest-silent sidecar
	// makes room; default 100,000.
	MaxSidecars int
	Logger      *zap.Logger
	Metrics     prometheus.Registerer
	// Notify receives a rewind event when a sidecar reports a lower version,
	// or another hash at the same version, than it did before (fleet.go);
	// default notify.Discard.
	Notify notify.Emitter
}

// Registry remembers what each sidecar reported, by any path (NATS for
// pushed sidecars, the API for polling ones), so the control plane can
// answer "who serves which version, who is behind, who went silent".
type Registry struct {
	o   RegistryOptions
	sub *nats.Subscription

	mu       sync.Mutex
	byEnv    map[string]map[string]config.SidecarReport
	total    int
	envs     map[string]bool
	envsRead time.Time

	rejected *prometheus.CounterVec
	fleet    *fleetCollector
}

// NewRegistry listens to every environment's sidecar reports on nc (nil:
// only reports recorded through Record).
func NewRegistry(nc *nats.Conn, o RegistryOptions) (*Registry, error) {
	if o.LostAfter <= 0 {
		o.LostAfter = 15 * time.Second
	}
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = time.Hour
	}
	if o.MaxSidecars <= 0 {
		o.MaxSidecars = 100_000
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	r := &Registry{o: o, byEnv: map[string]map[string]config.SidecarReport{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_sidecar_reports_rejected_total",
			Help: "Sidecar reports dropped: wrong subject for the sidecar, unknown environment, malformed."}, []string{"why"})}
	if o.Notify == nil {
		o.Notify = notify.Discard
	}
	r.o.Notify, r.fleet = o.Notify, newFleetCollector(r)
	if o.Metrics != nil {
		if err := o.Metrics.Register(r.rejected); err != nil {
			return nil, err
		}
		if err := o.Metrics.Register(r.fleet); err != nil {
			return nil, err
		}
	}
	if nc == nil {
		return r, nil
	}
	sub, err := nc.Subscribe(config.SidecarSubject("*")+".*", r.onReport)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	return r, nil
}

// onReport accepts a report only on the subject bound to its sidecar:
// pennon.<env>.sidecars.<ReportToken(env, id)>.
func (r *Registry) onReport(m *nats.Msg) {
	parts := strings.Split(m.Subject, ".")
	if len(parts) != 4 {
		r.rejected.WithLabelValues("subject").Inc()
		return
	}
	var rep config.SidecarReport
	if len(m.Data) > 4<<10 || json.Unmarshal(m.Data, &rep) != nil || rep.ID == "" {
		r.rejected.WithLabelValues("malformed").Inc()
		return
	}
	if rep.Env != parts[1] || r.o.Verifier == nil || r.o.Verifier.ReportToken(rep.Env, rep.ID) != parts[3] {
		r.rejected.WithLabelValues("identity").Inc()
		return
	}
	r.Record(rep, "nats")
}

// Record stores a report that arrived authenticated (over NATS on the
// sidecar's own subject, or through the API with a token for its env).
// It returns false when the report was dropped.
func (r *Registry) Record(rep config.SidecarReport, via string) bool {
	if !validSidecarReport(rep) {
		r.rejected.WithLabelValues("malformed").Inc()
		return false
	}
	if !r.envExists(rep.Env) {
		r.rejected.WithLabelValues("unknown_env").Inc()
		return false
	}
	rep.Time = time.Now().UTC() // our clock decides who is lost
	rep.Via, rep.Lost = via, false
	r.mu.Lock()
	defer r.mu.Unlock()
	byID := r.byEnv[rep.Env]
	if byID == nil {
		byID = map[string]config.SidecarReport{}
		r.byEnv[rep.Env] = byID
	}
	prev, known := byID[rep.ID]
	if known && isRewind(prev, rep) {
		r.emitRewind(prev, rep)
	}
	if !known {
		if r.total >= r.o.MaxSidecars {
			r.evictOldestLocked()
		}
		r.total++
	}
	byID[rep.ID] = rep
	return true
}

func validSidecarReport(rep config.SidecarReport) bool {
	return telemetry.ValidSidecarID(rep.ID) && len(rep.State) <= 32 && len(rep.Hash) <= 128
}

func (r *Registry) evictOldestLocked() {
	var oldEnv, oldID string
	var oldest time.Time
	for env, byID := range r.byEnv {
		for id, rep := range byID {
			if oldID == "" || rep.Time.Before(oldest) {
				oldEnv, oldID, oldest = env, id, rep.Time
			}
		}
	}
	if oldID != "" {
		delete(r.byEnv[oldEnv], oldID)
		r.total--
		r.rejected.WithLabelValues("evicted").Inc()
	}
}

// envExists consults a copy of the environment list refreshed at most
// every 5 seconds, so a report storm costs no store reads.
func (r *Registry) envExists(env string) bool {
	if r.o.Envs == nil {
		return false
	}
	r.mu.Lock()
	stale := time.Since(r.envsRead) > 5*time.Second
	known := r.envs[env]
	r.mu.Unlock()
	if known || !stale {
		return known
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := r.o.Envs(ctx)
	if err != nil {
		return false
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	r.mu.Lock()
	r.envs, r.envsRead = set, time.Now()
	r.mu.Unlock()
	return set[env]
}

// List returns the sidecars of env, sorted by ID; those silent for longer
// than LostAfter are marked lost, those silent longer than ForgetAfter are
// dropped.
func (r *Registry) List(env string) []config.SidecarReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []config.SidecarReport{}
	for id, rep := range r.byEnv[env] {
		silent := time.Since(rep.Time)
		if silent > r.o.ForgetAfter {
			delete(r.byEnv[env], id)
			r.total--
			continue
		}
		rep.Lost = silent > r.o.LostAfter
		out = append(out, rep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close stops listening.
func (r *Registry) Close() error {
	if r.sub == nil {
		return nil
	}
	return r.sub.Unsubscribe()
}
