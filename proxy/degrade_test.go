package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

// degradeFlags: "slow" scans an array in the context (expensive with a
// large one) and falls back to a rule on plan; "plain" has the same rule
// and no fallback, so it must never change; "cheap" has a fallback and a
// cheap rule (stays full unless overloaded).
const degradeFlags = `{"flags":{
 "slow": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"some":[{"var":"items"},{"==":[{"var":""},"needle"]}]},"on","off"]},
   "fallbackTargeting":{"if":[{"==":[{"var":"plan"},"premium"]},"on","off"]},
   "targetingBudget":"200us"},
 "plain": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"some":[{"var":"items"},{"==":[{"var":""},"needle"]}]},"on","off"]}},
 "cheap": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"on","off"]},
   "fallbackTargeting":{"if":[{"==":[{"var":"plan"},"premium"]},"on","off"]}}
}}`

func bigContext(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("x%05d", i)
	}
	b, _ := json.Marshal(map[string]any{"context": map[string]any{"plan": "premium", "items": items}})
	return string(b)
}

func degradeServer(t *testing.T, mutate func(*Options)) (*Server, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	var h evaluator.Holder
	h.Store(mustSnapshot(t, degradeFlags, 1))
	s := startServer(t, &h, func(o *Options) {
		o.Logger = zap.New(core)
		o.MaxBodyBytes = 1 << 20
		o.Limits = evaluator.Limits{MaxBytes: 1 << 20, MaxKeys: 1 << 20}
		o.CacheMinCost = -1 // cache every cacheable flag: fallback answers must still stay out
		mutate(o)
	})
	return s, logs
}

// countLogs counts log entries with message msg (and flag, when not "").
func countLogs(logs *observer.ObservedLogs, msg, flag string) int {
	n := 0
	for _, e := range logs.FilterMessage(msg).All() {
		if flag == "" || e.ContextMap()["flag"] == flag {
			n++
		}
	}
	return n
}

func statusTargeting(t *testing.T, base string) TargetingStatus {
	t.Helper()
	code, _, body := do(t, "GET", base+"/v1/status", "", "")
	if code != 200 {
		t.Fatalf("status: %d %s", code, body)
	}
	var st struct{ Targeting TargetingStatus }
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status: %v in %s", err, body)
	}
	return st.Targeting
}

const (
	fbCostSlow     = `{"key":"slow","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{"pennonFallbackReason":"cost","pennonTargeting":"fallback"}}`
	fullSlow       = `{"key":"slow","reason":"TARGETING_MATCH","variant":"off","value":false,"metadata":{}}`
	fullPlain      = `{"key":"plain","reason":"TARGETING_MATCH","variant":"off","value":false,"metadata":{}}`
	fbOverloadSlow = `{"key":"slow","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{"pennonFallbackReason":"overload","pennonTargeting":"fallback"}}`
	fbOverloadChp  = `{"key":"cheap","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{"pennonFallbackReason":"overload","pennonTargeting":"fallback"}}`
	fullCheap      = `{"key":"cheap","reason":"TARGETING_MATCH","variant":"off","value":false,"metadata":{}}`
)

// TestDegradeCostFallbackAndBack: a flag whose rule costs more than its
// budget on real requests switches to its fallback (metadata, metric,
// /v1/status, one log line), a flag without a fallback with the same rule
// keeps its full answer, and the flag returns to its full rule once the
// contexts are cheap again (one more log line).
func TestDegradeCostFallbackAndBack(t *testing.T) {
	s, logs := degradeServer(t, func(o *Options) {
		o.CostSampleEvery = 2 // every other evaluation is a probe of the full rule
		o.OverloadInFlight = -1
	})
	base := "http://" + s.Addr()
	js := "application/json"
	big := bigContext(40000)
	small := `{"context":{"plan":"premium","items":["a"]}}`

	if _, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/slow", js, small); body != fullSlow {
		t.Fatalf("before any pressure: got %s, want %s", body, fullSlow)
	}
	checkfor.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if _, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/slow", js, big); body != fbCostSlow {
			return fmt.Errorf("not degraded yet: %s", body)
		}
		return nil
	})
	// The flag without a fallback is never changed, however slow.
	for range 4 {
		if _, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/plain", js, big); body != fullPlain {
			t.Fatalf("plain: got %s, want %s", body, fullPlain)
		}
	}
	st := statusTargeting(t, base)
	if len(st.Degraded) != 1 || st.Degraded[0].Flag != "slow" || st.Degraded[0].Reason != "cost" ||
		st.Degraded[0].Budget != "200µs" || st.Degraded[0].Cost == "" || st.Degraded[0].Since.IsZero() || st.FlagsWithFallback != 2 {
		t.Fatalf("status while degraded: %+v", st)
	}
	if c, err := time.ParseDuration(st.Degraded[0].Cost); err != nil || c <= 200*time.Microsecond {
		t.Fatalf("status cost %q: want a duration above the 200µs budget (%v)", st.Degraded[0].Cost, err)
	}
	_, _, metrics := do(t, "GET", base+"/metrics", "", "")
	if !strings.Contains(metrics, `pennon_targeting_fallback_answers_total{flag="slow",reason="cost"} `) ||
		!strings.Contains(metrics, "pennon_targeting_degraded_flags 1") ||
		strings.Contains(metrics, `pennon_targeting_fallback_answers_total{flag="plain"`) {
		t.Fatalf("metrics while degraded lack the fallback series:\n%s", grepLines(metrics, "pennon_targeting"))
	}
	// Bulk answers say the same, and are not cached while degraded.
	for range 2 {
		_, _, bulk := do(t, "POST", base+"/ofrep/v1/evaluate/flags", js, big)
		if !strings.Contains(bulk, fullPlain) || !strings.Contains(bulk, `{"key":"slow",`) {
			t.Fatalf("bulk while degraded: %s", truncate(bulk, 400))
		}
	}

	// Cheap contexts: the probes bring the average under half the budget
	// (100µs; a loaded machine under -race can stay above it for a while,
	// hence the long deadline).
	checkfor.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		do(t, "POST", base+"/ofrep/v1/evaluate/flags/slow", js, small)
		if st := statusTargeting(t, base); len(st.Degraded) != 0 {
			return fmt.Errorf("still degraded: %+v", st.Degraded)
		}
		return nil
	})
	for range 4 {
		if _, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/slow", js, small); body != fullSlow {
			t.Fatalf("after recovery: got %s, want %s", body, fullSlow)
		}
	}
	if n := countLogs(logs, "targeting degraded to fallback", "slow"); n != 1 {
		t.Errorf("%d degradation log lines for slow, want 1", n)
	}
	if n := countLogs(logs, "targeting restored to full rule", "slow"); n != 1 {
		t.Errorf("%d restoration log lines for slow, want 1", n)
	}
	for _, e := range logs.FilterMessage("targeting degraded to fallback").All() {
		m := e.ContextMap()
		for _, k := range []string{"flag", "from", "to", "cost", "budget", "reason"} {
			if _, ok := m[k]; !ok {
				t.Errorf("transition log lacks field %q: %v", k, m)
			}
		}
		if m["from"] != "full" || m["to"] != "fallback (cost)" || m["reason"] != "cost over budget" {
			t.Errorf("transition log fields: %v", m)
		}
	}
	if n := countLogs(logs, "targeting degraded to fallback", "plain") + countLogs(logs, "targeting degraded to fallback", "cheap"); n != 0 {
		t.Errorf("%d transitions logged for flags that were not degraded", n)
	}
}

// TestDegradeOverload: with more OFREP requests in flight than
// OverloadInFlight every flag with a fallback serves it (single and bulk),
// the others answer as usual, nothing served then is cached, and all
// return to their full rule when the load is gone. Requests held in
// flight are stood for by enter calls — the same counter the handlers
// use — because a real request cannot be parked deterministically.
func TestDegradeOverload(t *testing.T) {
	s, logs := degradeServer(t, func(o *Options) {
		o.CostSampleEvery = -1
		o.OverloadInFlight = 2
	})
	base := "http://" + s.Addr()
	js := "application/json"
	ctx := `{"context":{"plan":"premium","items":["a"]}}`
	single := func(key string) string {
		t.Helper()
		code, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/"+key, js, ctx)
		if code != 200 {
			t.Fatalf("%s: %d %s", key, code, body)
		}
		return body
	}
	bulk := func() string {
		t.Helper()
		_, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags", js, ctx)
		return body
	}
	// Warm the response cache with full answers (the bulk one is cached on
	// its second miss, single flags on their first).
	for range 3 {
		if b := single("cheap"); b != fullCheap {
			t.Fatalf("cheap before overload: %s", b)
		}
		if b := bulk(); !strings.Contains(b, fullCheap) {
			t.Fatalf("bulk before overload: %s", truncate(b, 400))
		}
	}
	s.cache.Wait()

	for range 3 {
		s.deg.enter()
	}
	tests := []struct{ key, want string }{{"cheap", fbOverloadChp}, {"slow", fbOverloadSlow}, {"plain", fullPlain}}
	for range 3 { // repeated: a fallback answer is never cached and then served as full
		for _, tc := range tests {
			if b := single(tc.key); b != tc.want {
				t.Errorf("%s under overload: got %s, want %s", tc.key, b, tc.want)
			}
		}
	}
	// Bulk: the cached full answer may be served (it is correct); a freshly
	// built one carries the fallbacks. Ask with new contexts, twice each,
	// which would be cached on the second ask if nothing prevented it.
	for i := range 3 {
		c := fmt.Sprintf(`{"context":{"plan":"premium","n":%d}}`, i)
		for range 2 {
			_, _, b := do(t, "POST", base+"/ofrep/v1/evaluate/flags", js, c)
			if !strings.Contains(b, fbOverloadChp) || !strings.Contains(b, fullPlain) {
				t.Fatalf("bulk under overload: %s", truncate(b, 500))
			}
		}
	}
	st := statusTargeting(t, base)
	if !st.Overloaded || st.InFlight != 3 || st.OverloadInFlight != 2 || len(st.Degraded) != 2 ||
		st.Degraded[0].Flag != "cheap" || st.Degraded[0].Reason != "overload" || st.Degraded[1].Flag != "slow" {
		t.Fatalf("status under overload: %+v", st)
	}
	s.cache.Wait()

	for range 3 {
		s.deg.exit()
	}
	for range 2 {
		for _, tc := range []struct{ key, want string }{{"cheap", fullCheap}, {"plain", fullPlain}} {
			if b := single(tc.key); b != tc.want {
				t.Errorf("%s after overload: got %s, want %s", tc.key, b, tc.want)
			}
		}
	}
	for i := range 3 {
		c := fmt.Sprintf(`{"context":{"plan":"premium","n":%d}}`, i)
		_, _, b := do(t, "POST", base+"/ofrep/v1/evaluate/flags", js, c)
		if !strings.Contains(b, fullCheap) || strings.Contains(b, "pennonTargeting") {
			t.Fatalf("bulk after overload serves a fallback answer: %s", truncate(b, 500))
		}
	}
	if st := statusTargeting(t, base); st.Overloaded || len(st.Degraded) != 0 {
		t.Fatalf("status after overload: %+v", st)
	}
	for msg, want := range map[string]int{"sidecar overloaded: flags with fallbackTargeting serve it": 1,
		"sidecar no longer overloaded: flags return to their full targeting": 1} {
		if n := countLogs(logs, msg, ""); n != want {
			t.Errorf("%d %q log lines, want %d", n, msg, want)
		}
	}
	for _, flag := range []string{"cheap", "slow"} {
		if d, r := countLogs(logs, "targeting degraded to fallback", flag), countLogs(logs, "targeting restored to full rule", flag); d != 1 || r != 1 {
			t.Errorf("%s: %d degradation and %d restoration log lines, want 1 and 1", flag, d, r)
		}
	}
	if n := countLogs(logs, "targeting degraded to fallback", "plain"); n != 0 {
		t.Errorf("plain has no fallback but logged %d transitions", n)
	}
}

func TestDegradeOptionsValidated(t *testing.T) {
	var h evaluator.Holder
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"sample not a power of two", Options{Source: &h, CostSampleEvery: 48}, "CostSampleEvery must be a power of two"},
		{"negative budget", Options{Source: &h, TargetingBudget: -time.Microsecond}, "TargetingBudget must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// BenchmarkHandlerDegradeSampling: the hot path of a flag with
// fallbackTargeting with cost sampling on (1 in 64) and off, and of a
// flag without a fallback (which the degradation logic must not touch).
// Figures in docs/sidecar.md.
func BenchmarkHandlerDegradeSampling(b *testing.B) {
	doc := strings.Replace(benchFlags, `"targeting":{"if"`, `"fallbackTargeting":{"==":[1,1]},"targeting":{"if"`, 1)
	doc = strings.Replace(doc, `"static": {`, `"plainrule": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
   "targeting":{"if":[{"and":[{"==":[{"var":"plan"},"premium"]},{"in":[{"var":"country"},["US","CA","GB","DE","FR","NL","SE","NO","DK","FI"]]},
   {"ends_with":[{"var":"email"},"@example.com"]},{">=":[{"var":"age"},18]},{"sem_ver":[{"var":"appVersion"},">=","2.3.0"]}]},"on","off"]}},
 "static": {`, 1)
	for _, bc := range []struct {
		name  string
		flag  string
		every int
	}{{"fallback/sampling-on", "targeted", 0}, {"fallback/sampling-off", "targeted", -1}, {"no-fallback", "plainrule", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(mustSnapshot(b, doc, 1))
			s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, CostSampleEvery: bc.every, CacheBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			hd := s.Handler()
			var ctx fasthttp.RequestCtx
			body := []byte(benchContext)
			path := "/ofrep/v1/evaluate/flags/" + bc.flag
			b.ReportAllocs()
			for b.Loop() {
				request(&ctx, "POST", path, body)
				hd(&ctx)
				if ctx.Response.StatusCode() != 200 || strings.Contains(string(ctx.Response.Body()), "pennonTargeting") {
					b.Fatal(string(ctx.Response.Body()))
				}
			}
		})
	}
}

// BenchmarkDegradeEvaluate isolates what the degradation logic adds to one
// evaluation of a flag with a fallback (the handler benchmark above is
// dominated by request decoding): evaluator alone, then through the
// degrader with sampling on and off.
func BenchmarkDegradeEvaluate(b *testing.B) {
	doc := strings.Replace(benchFlags, `"targeting":{"if"`, `"fallbackTargeting":{"==":[1,1]},"targeting":{"if"`, 1)
	snap := mustSnapshot(b, doc, 1)
	f := snap.Flag("targeted")
	ec := evaluator.NewContext()
	var body struct{ Context json.RawMessage }
	if err := json.Unmarshal([]byte(benchContext), &body); err != nil {
		b.Fatal(err)
	}
	if err := ec.Decode(body.Context, evaluator.Limits{}); err != nil {
		b.Fatal(err)
	}
	b.Run("evaluator-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := snap.EvaluateFlag(f, ec); r.Variant != "on" {
				b.Fatal(r)
			}
		}
	})
	for _, bc := range []struct {
		name  string
		every int
	}{{"sampling-on", 0}, {"sampling-off", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			var h evaluator.Holder
			h.Store(snap)
			s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, CostSampleEvery: bc.every, CacheBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if r := s.deg.evaluateFlag(snap, f, ec); r.Variant != "on" {
					b.Fatal(r)
				}
			}
		})
	}
}

// TestDegradeFollowsSnapshot: a degraded flag that loses its fallback in a
// new flag set answers with its full rule at once and stops being counted
// (a stale count would keep bulk answers out of the cache for good).
func TestDegradeFollowsSnapshot(t *testing.T) {
	core, _ := observer.New(zapcore.InfoLevel)
	var h evaluator.Holder
	h.Store(mustSnapshot(t, degradeFlags, 1))
	s := startServer(t, &h, func(o *Options) { o.Logger = zap.New(core); o.OverloadInFlight = 1; o.CostSampleEvery = -1 })
	base := "http://" + s.Addr()
	ctx := `{"context":{"plan":"premium"}}`
	s.deg.enter()
	s.deg.enter()
	if _, _, b := do(t, "POST", base+"/ofrep/v1/evaluate/flags/cheap", "application/json", ctx); b != fbOverloadChp {
		t.Fatalf("cheap under overload: %s", b)
	}
	if n := s.deg.degraded.Load(); n != 1 {
		t.Fatalf("degraded = %d, want 1", n)
	}
	h.Store(mustSnapshot(t, strings.Replace(degradeFlags, `"fallbackTargeting":{"if":[{"==":[{"var":"plan"},"premium"]},"on","off"]}}`, `"metadata":{}}`, 1), 2))
	if _, _, b := do(t, "POST", base+"/ofrep/v1/evaluate/flags/cheap", "application/json", ctx); b != fullCheap {
		t.Fatalf("cheap without its fallback: got %s, want %s", b, fullCheap)
	}
	s.deg.calm(h.Current()) // what a bulk answer asks before caching: it brings the table to the new set
	if n := s.deg.degraded.Load(); n != 0 {
		t.Fatalf("degraded = %d after the flag lost its fallback, want 0", n)
	}
	if st := statusTargeting(t, base); st.FlagsWithFallback != 1 || len(st.Degraded) != 1 || st.Degraded[0].Flag != "slow" {
		t.Fatalf("status: %+v", st)
	}
	s.deg.exit()
	s.deg.exit()
}

// TestCostAverageIgnoresOneOutlier: a sample stretched by descheduling
// does not degrade a flag that is under budget, whether it is the first
// sample or a later one, while a rule really over budget degrades once the
// average holds minCostSamples samples and recovers under half the budget.
func TestCostAverageIgnoresOneOutlier(t *testing.T) {
	const budget = 50 * time.Microsecond
	outlier := 10 * time.Millisecond
	tests := []struct {
		name    string
		samples []time.Duration
		slow    bool
	}{
		{"outlier first", append([]time.Duration{outlier}, repeat(40*time.Microsecond, minCostSamples-1)...), false},
		{"outlier first, then cheap", append([]time.Duration{outlier}, repeat(3*time.Microsecond, 20)...), false},
		{"outlier later", append(repeat(30*time.Microsecond, 10), outlier), false},
		{"over budget", repeat(80*time.Microsecond, minCostSamples), true},
		{"over budget, one sample short", repeat(80*time.Microsecond, minCostSamples-1), false},
		{"over budget, then cheap", append(repeat(80*time.Microsecond, minCostSamples), repeat(5*time.Microsecond, 10)...), false},
		{"over budget, then just under", append(repeat(80*time.Microsecond, minCostSamples), repeat(45*time.Microsecond, 20)...), true}, // hysteresis
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var fl flagLoad
			fl.budget.Store(int64(budget))
			for _, s := range tc.samples {
				fl.observe(s)
			}
			if got := fl.slow.Load(); got != tc.slow {
				t.Fatalf("over budget = %v after %v (average %v), want %v", got, tc.samples, time.Duration(fl.ewma.Load()), tc.slow)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
