package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/evaluator"
)

// The guard steps the cache aside when a window's hit rate collapses, says
// so once, comes back after the bypass period, and leaves a cache that pays
// alone.
func TestCacheGuardWindows(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	g := newCacheGuard(zap.New(core), gauge)
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }

	for i := 0; i < 4*guardWindow; i++ { // a cache that pays: half hits
		g.record(i%2 == 0)
	}
	if g.bypassed() || testutil.ToFloat64(gauge) != 0 {
		t.Fatal("a cache with a 50% hit rate was bypassed")
	}
	for i := 0; i < guardWindow; i++ { // collapse: 1% hits
		g.record(i%100 == 0)
	}
	if !g.bypassed() || testutil.ToFloat64(gauge) != 1 || !g.status().Bypassed {
		t.Fatalf("collapsed hit rate not bypassed: %+v", g.status())
	}
	now = now.Add(guardBypassFor - time.Second)
	if !g.bypassed() {
		t.Fatal("bypass ended early")
	}
	now = now.Add(2 * time.Second)
	if g.bypassed() || testutil.ToFloat64(gauge) != 0 {
		t.Fatal("bypass did not end")
	}
	if n := logs.FilterMessageSnippet("bypassed").Len(); n != 1 {
		t.Fatalf("bypass logged %d times, want once", n)
	}
	if n := logs.FilterMessageSnippet("back in use").Len(); n != 1 {
		t.Fatalf("resume logged %d times, want once", n)
	}
}

// Through the handler: contexts that never repeat collapse the hit rate,
// the cache is stepped aside (status says so) and every answer stays right.
func TestCacheBypassedWhenContextsNeverRepeat(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s := startServer(t, &h, func(o *Options) { o.CacheMinCost = 1; o.CacheBytes = 1 << 20 })
	url := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags/color"
	for i := 0; i <= guardWindow; i++ {
		plan := fmt.Sprint("plan-", i) // the attribute the flag reads never repeats
		if i%500 == 0 {
			plan = "premium"
		}
		_, _, body := do(t, "POST", url, "application/json", fmt.Sprintf(`{"context":{"plan":%q}}`, plan))
		want := `"value":"blue"`
		if plan == "premium" {
			want = `"value":"red"`
		}
		if !strings.Contains(body, want) {
			t.Fatalf("request %d (%s): %s", i, plan, body)
		}
	}
	_, _, status := do(t, "GET", "http://"+s.Addr()+"/v1/status", "", "")
	if !strings.Contains(status, `"bypassed": true`) {
		t.Fatalf("status does not show the bypass: %s", status)
	}
}

// A cache whose lookup costs more than the evaluation it saves is stepped
// aside too, with that reason, even at a good hit rate.
func TestCacheGuardSlowerThanEvaluating(t *testing.T) {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	g := newCacheGuard(zap.NewNop(), gauge)
	g.observeLookup(3 * time.Microsecond)
	g.observeEval(time.Microsecond)
	for i := 0; i < guardWindow; i++ {
		g.record(i%2 == 0)
	}
	st := g.status()
	if !st.Bypassed || st.Reason != "a lookup costs more than evaluating" || st.LookupCost == "" || st.EvalCost == "" {
		t.Fatalf("slow cache not bypassed: %+v", st)
	}
	g2 := newCacheGuard(zap.NewNop(), gauge)
	g2.observeLookup(time.Microsecond)
	g2.observeEval(3 * time.Microsecond)
	for i := 0; i < guardWindow; i++ {
		g2.record(i%2 == 0)
	}
	if g2.bypassed() {
		t.Fatal("a cache faster than evaluating was bypassed")
	}
}
