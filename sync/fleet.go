package flagsync

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/notify"
)

// isRewind tells whether a sidecar's new report went back: a lower version
// than before, or the same version with another hash (a restore from
// backup, a forged or diverged flag set the sidecar converged away from).
// Version 0 is a sidecar that has loaded nothing yet (a restart): not a
// rewind.
func isRewind(prev, rep config.SidecarReport) bool {
	if rep.Version == 0 || prev.Version == 0 {
		return false
	}
	return rep.Version < prev.Version || rep.Version == prev.Version && prev.Hash != "" && rep.Hash != "" && rep.Hash != prev.Hash
}

// rewindEvent is the notification for one rewind episode of one sidecar.
// Its ID derives from the transition, so every control-plane replica that
// sees the same report emits the same ID (stored once, de-duplicable).
func rewindEvent(prev, rep config.SidecarReport) notify.Event {
	short := func(h string) string { return h[:min(len(h), 12)] }
	what := fmt.Sprintf("version %d → %d", prev.Version, rep.Version)
	if rep.Version == prev.Version {
		what = fmt.Sprintf("version %d, hash %s → %s", rep.Version, short(prev.Hash), short(rep.Hash))
	}
	return notify.Event{
		ID:   fmt.Sprintf("rewind-%s-%s-%d-%s-%d-%s", rep.Env, rep.ID, prev.Version, short(prev.Hash), rep.Version, short(rep.Hash)),
		Type: notify.TypeRewind, Env: rep.Env, Time: rep.Time, Severity: notify.SeverityWarning,
		Title: fmt.Sprintf("%s: sidecar %s went back (%s)", rep.Env, rep.ID, what),
		Text:  "A sidecar converged to a lower version or another flag set at the same version: the environment was restored or rolled back outside pennon, or the sidecar had diverged. Check the audit log and `pennon history`.",
		Data: map[string]any{"sidecar": rep.ID, "fromVersion": prev.Version, "fromHash": prev.Hash, "toVersion": rep.Version,
			"toHash": rep.Hash, "state": rep.State, "via": rep.Via},
	}
}

// fleetCollector exports, at scrape time, how many sidecars of each
// environment are live, lost (silent past LostAfter) and behind (live, at a
// lower version than the newest any sidecar of the environment reports),
// so alerts can fire on a fleet the control plane sees going quiet.
type fleetCollector struct {
	r            *Registry
	live, behind *prometheus.Desc
	rewinds      *prometheus.CounterVec
}

func newFleetCollector(r *Registry) *fleetCollector {
	return &fleetCollector{r: r,
		live:   prometheus.NewDesc("pennon_fleet_sidecars", "Sidecars known to the control plane by environment and state (live: reported within lost-after; lost: silent longer).", []string{"env", "state"}, nil),
		behind: prometheus.NewDesc("pennon_fleet_sidecars_behind", "Live sidecars at a lower version than the newest version reported in their environment.", []string{"env"}, nil),
		rewinds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_fleet_rewinds_total",
			Help: "Sidecar reports that went back to a lower version, or to another hash at the same version (one per episode)."}, []string{"env"}),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.live
	ch <- c.behind
	c.rewinds.Describe(ch)
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	type counts struct{ live, lost, behind int }
	out := map[string]*counts{}
	c.r.mu.Lock()
	for env, byID := range c.r.byEnv {
		n := &counts{}
		out[env] = n
		var newest uint64
		for _, rep := range byID {
			if time.Since(rep.Time) <= c.r.o.LostAfter {
				newest = max(newest, rep.Version)
			}
		}
		for _, rep := range byID {
			switch {
			case time.Since(rep.Time) > c.r.o.LostAfter:
				n.lost++
			case rep.Version < newest:
				n.live++
				n.behind++
			default:
				n.live++
			}
		}
	}
	c.r.mu.Unlock()
	for env, n := range out {
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(n.live), env, "live")
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(n.lost), env, "lost")
		ch <- prometheus.MustNewConstMetric(c.behind, prometheus.GaugeValue, float64(n.behind), env)
	}
	c.rewinds.Collect(ch)
}

// emitRewind counts and announces a rewind (Emit never blocks).
func (r *Registry) emitRewind(prev, rep config.SidecarReport) {
	r.fleet.rewinds.WithLabelValues(rep.Env).Inc()
	r.o.Logger.Warn("sidecar went back", zap.String("env", rep.Env), zap.String("sidecar", rep.ID),
		zap.Uint64("fromVersion", prev.Version), zap.String("fromHash", prev.Hash), zap.Uint64("toVersion", rep.Version), zap.String("toHash", rep.Hash))
	r.o.Notify.Emit(context.Background(), rewindEvent(prev, rep))
}
