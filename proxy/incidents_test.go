package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

func openRecord(rec *incident.Recorder, kind string) *incident.Record {
	for _, r := range rec.Open() {
		if r.Kind == kind {
			return &r
		}
	}
	return nil
}

func answers(r *incident.Record, name string) uint64 {
	for _, f := range r.Fallbacks {
		if f.Name == name {
			return f.Answers
		}
	}
	return 0
}

// The answer path's degradations reach an attached recorder: the cache
// stepped aside (and every answer evaluated meanwhile), and a flag served
// by its fallback targeting (each fallback answer); IncidentLoad counts
// the OFREP requests answered.
func TestIncidentHooks(t *testing.T) {
	t.Run("cache bypass", func(t *testing.T) {
		var h evaluator.Holder
		h.Store(mustSnapshot(t, testFlags, 1))
		s := startServer(t, &h, func(o *Options) { o.CacheMinCost = 1; o.CacheBytes = 1 << 20 })
		rec, _ := incident.NewRecorder(incident.RecorderOptions{Env: "dev", Source: "car-1", Load: s.IncidentLoad})
		s.SetIncidents(rec)
		url := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags/color"
		const after = 7
		for i := 0; i < guardWindow+after; i++ { // the attribute the flag reads never repeats
			if _, _, body := do(t, "POST", url, "application/json", fmt.Sprintf(`{"context":{"plan":"plan-%d"}}`, i)); !strings.Contains(body, `"value":"blue"`) {
				t.Fatalf("request %d: %s", i, body)
			}
		}
		r := openRecord(rec, incident.KindCacheBypass)
		if r == nil || r.Reason != "hit rate collapsed" {
			t.Fatalf("no cache_bypass record: %+v", rec.Open())
		}
		if got := answers(r, incident.FallbackCacheBypass); got != after {
			t.Fatalf("answers evaluated while bypassed: %d, want %d", got, after)
		}
		if l := s.IncidentLoad(); l.Requests != guardWindow+after || s.IncidentErrors() != 0 {
			t.Fatalf("load %+v, want %d requests", l, guardWindow+after)
		}
	})
	t.Run("fallback targeting", func(t *testing.T) {
		s, _ := degradeServer(t, func(o *Options) {
			o.CostSampleEvery = 2
			o.OverloadInFlight = -1
		})
		rec, _ := incident.NewRecorder(incident.RecorderOptions{Env: "dev", Source: "car-1"})
		s.SetIncidents(rec)
		base := "http://" + s.Addr()
		big := bigContext(40000)
		served := uint64(0)
		checkfor.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if _, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/slow", "application/json", big); body != fbCostSlow {
				return fmt.Errorf("not degraded yet: %s", body)
			}
			served++
			return nil
		})
		r := openRecord(rec, incident.KindTargetingFallback)
		if r == nil || r.Reason != "full rule over budget" || len(r.Detail) != 1 || r.Detail[0] != "slow (cost)" {
			t.Fatalf("targeting record: %+v", rec.Open())
		}
		if got := answers(r, incident.FallbackTargetingCost); got != served {
			t.Fatalf("fallback answers %d, want %d", got, served)
		}
	})
}
