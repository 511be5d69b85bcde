package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

// updateGolden rewrites testdata/bulk-golden.json from the current code.
// It was run once, before the bulk path was rewritten for speed, so the
// file records the answers as they were; the test proves they did not move.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/bulk-golden.json from the current bulk answers")

// generatedFlags returns a flagd document with n flags that exercises every
// shape a bulk answer can take: static booleans, string targeting, numbers,
// objects, fractional splits, disabled flags, flags without a default
// (code default), prerequisites met and not met, a rule that fails
// (GENERAL: an unknown variant name), flag-set and per-flag metadata, and
// strings that need JSON escaping.
func generatedFlags(n int) []byte {
	flags := make(map[string]any, n)
	for i := range n {
		key := "flag-" + strconv.Itoa(i)
		switch i % 12 {
		case 0, 1, 2:
			flags[key] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "on"}
		case 3:
			flags[key] = map[string]any{"state": "ENABLED", "defaultVariant": "standard",
				"variants": map[string]any{"internal": "internal", "eu": "eu", "standard": "standard"},
				"targeting": map[string]any{"if": []any{
					map[string]any{"ends_with": []any{map[string]any{"var": "email"}, "@pennon.dev"}}, "internal",
					map[string]any{"in": []any{map[string]any{"var": "country"}, []any{"DE", "FR", "NL"}}}, "eu",
					"standard"}}}
		case 4:
			flags[key] = map[string]any{"state": "ENABLED", "defaultVariant": "a",
				"variants": map[string]any{"a": "a", "b": "b"},
				"targeting": map[string]any{"fractional": []any{
					map[string]any{"cat": []any{map[string]any{"var": "$flagd.flagKey"}, map[string]any{"var": "targetingKey"}}},
					[]any{"a", 50}, []any{"b", 50}}}}
		case 5:
			flags[key] = map[string]any{"state": "DISABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "on"}
		case 6:
			flags[key] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}}
		case 7:
			flags[key] = map[string]any{"state": "ENABLED", "defaultVariant": "low",
				"variants":  map[string]any{"low": 0.25, "high": 1e21, "mid": 42},
				"targeting": map[string]any{"if": []any{map[string]any{">=": []any{map[string]any{"var": "age"}, 30}}, "mid", nil}},
				"metadata":  map[string]any{"owner": "team-" + strconv.Itoa(i%3), "ticket": i}}
		case 8:
			flags[key] = map[string]any{"state": "ENABLED", "defaultVariant": "cfg",
				"variants": map[string]any{"cfg": map[string]any{"limit": 10, "names": []any{"a", "é\u2028\"x"}}, "none": []any{}}}
		case 9:
			flags[key] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "off",
				"targeting":     map[string]any{"if": []any{map[string]any{"==": []any{map[string]any{"var": "plan"}, "pro"}}, "on", "off"}},
				"prerequisites": map[string]any{"flag-" + strconv.Itoa(i-6): "eu"}}
		case 10:
			flags[key] = map[string]any{"state": "ENABLED", "variants": map[string]any{"a": "a"}, "defaultVariant": "a",
				"targeting": map[string]any{"var": "pick"}}
		case 11:
			flags["x.Esc_"+key] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "off"}
		}
	}
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"flagSetId": "gen", "version": 7}, "flags": flags})
	if err != nil {
		panic(err) // maps of strings and numbers: cannot fail
	}
	return b
}

// bulkGoldenContexts are the request bodies every golden set is asked with.
var bulkGoldenContexts = []string{
	``,
	`{}`,
	`{"context":{}}`,
	`{"context":{"targetingKey":"user-1"}}`,
	`{"context":{"targetingKey":"user-7","email":"ann@pennon.dev","country":"DE","plan":"pro","age":33,"appVersion":"3.4.0"}}`,
	`{"context":{"targetingKey":"user-42","email":"bob@example.com","country":"SE","plan":"free","age":18,"appVersion":"2.9.9","pick":"a"}}`,
	` {"context":{"targetingKey":"ü\u00e9","country":"NL","pick":7,"nested":{"a":[1,2,{"b":null}]}}} `,
}

// goldenCase is one recorded bulk answer.
type goldenCase struct {
	Set     string `json:"set"`
	Context string `json:"context"`
	Status  int    `json:"status"`
	ETag    string `json:"etag"`
	Bytes   int    `json:"bytes"`
	SHA256  string `json:"sha256"`
	// Body is kept in full for the small example set (readable diffs);
	// the generated set's answers are compared by hash.
	Body string `json:"body,omitempty"`
}

func bulkGoldenSets() []struct {
	name string
	doc  []byte
} {
	return []struct {
		name string
		doc  []byte
	}{
		{"checkout", examples.Checkout},
		{"generated-1000", generatedFlags(1000)},
	}
}

// TestBulkGolden: the bulk answers (status, ETag, body bytes) for
// examples/checkout.json and a generated 1,000-flag set, under several
// contexts, are byte-identical to the ones recorded before the bulk path
// was optimised. Every request is asked twice, so a cached or precomputed
// second answer is compared too.
func TestBulkGolden(t *testing.T) {
	path := filepath.Join("testdata", "bulk-golden.json")
	var got []goldenCase
	for _, set := range bulkGoldenSets() {
		for _, cacheBytes := range []int64{0, -1} { // bulk cache on (default), cache off
			var h evaluator.Holder
			h.Store(mustSnapshot(t, string(set.doc), 5))
			s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, CacheBytes: cacheBytes})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if s.cache != nil {
					s.cache.Close()
				}
			})
			hd := s.Handler()
			for round := range 3 {
				for _, c := range bulkGoldenContexts {
					var ctx fasthttp.RequestCtx
					request(&ctx, "POST", "/ofrep/v1/evaluate/flags", []byte(c))
					hd(&ctx)
					body := ctx.Response.Body()
					sum := sha256.Sum256(body)
					gc := goldenCase{Set: set.name, Context: c, Status: ctx.Response.StatusCode(),
						ETag: etagShape(string(ctx.Response.Header.Peek("ETag"))), Bytes: len(body), SHA256: hex.EncodeToString(sum[:])}
					if set.name == "checkout" {
						gc.Body = string(body)
					}
					if !json.Valid(body) {
						t.Fatalf("%s %q: invalid JSON %q", set.name, c, truncate(string(body), 300))
					}
					if round == 0 && cacheBytes == 0 {
						got = append(got, gc)
						continue
					}
					// Later rounds and the cache-off server must repeat round 0.
					if err := sameAsFirst(got, gc); err != nil {
						t.Errorf("round %d cache %d: %v", round, cacheBytes, err)
					}
				}
				if s.cache != nil {
					s.cache.Wait() // later rounds are answered from the cache
				}
			}
			if s.cache != nil && testutil.ToFloat64(s.m.cacheHit) == 0 {
				t.Errorf("%s: later rounds were never answered from the bulk cache", set.name)
			}
		}
	}
	if *updateGolden {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d cases)", path, len(got))
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./proxy -run TestBulkGolden -update-golden on the commit before the bulk rewrite)", err)
	}
	var want []goldenCase
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d golden cases recorded, %d produced", len(want), len(got))
	}
	for i := range want {
		w, g := want[i], got[i]
		// The ETag's hash part includes the snapshot's process-unique ID
		// (a rewind can reuse a version), so it differs between runs: its
		// version and shape are compared, context-dependence is
		// TestBulkETagDependsOnContext's job.
		w.ETag, g.ETag = etagShape(w.ETag), etagShape(g.ETag)
		if w != g {
			t.Errorf("%s context %q:\n got status %d etag %s %d bytes sha %s\nwant status %d etag %s %d bytes sha %s\n%s",
				w.Set, w.Context, g.Status, g.ETag, g.Bytes, g.SHA256, w.Status, w.ETag, w.Bytes, w.SHA256, firstDiff(w.Body, g.Body))
		}
	}
}

// sameAsFirst finds the round-0 answer for gc's set and context in first.
func sameAsFirst(first []goldenCase, gc goldenCase) error {
	for _, f := range first {
		if f.Set == gc.Set && f.Context == gc.Context {
			if f != gc {
				return fmt.Errorf("%s %q: answer changed between requests: %d bytes sha %s, first %d bytes sha %s\n%s",
					gc.Set, gc.Context, gc.Bytes, gc.SHA256, f.Bytes, f.SHA256, firstDiff(f.Body, gc.Body))
			}
			return nil
		}
	}
	return fmt.Errorf("%s %q: no first answer", gc.Set, gc.Context)
}

func firstDiff(a, b string) string {
	if a == b {
		return ""
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(i-80, 0)
	return fmt.Sprintf("first difference at byte %d:\nwant …%s\n got …%s", i, a[lo:min(len(a), i+80)], b[lo:min(len(b), i+80)])
}

// TestBulkMetricsCountEveryEvaluation: pennon_evaluations_total counts
// every flag of every bulk answer — precomputed, evaluated or served from
// the response cache — and single-flag cache hits, exactly as if each had
// been evaluated.
func TestBulkMetricsCountEveryEvaluation(t *testing.T) {
	for _, c := range []struct {
		name       string
		cacheBytes int64
	}{{"cache on", 0}, {"cache off", -1}} {
		t.Run(c.name, func(t *testing.T) {
			var h evaluator.Holder
			h.Store(mustSnapshot(t, testFlags, 1))
			s := startServer(t, &h, func(o *Options) { o.CacheBytes = c.cacheBytes; o.CacheMinCost = -1 })
			base := "http://" + s.Addr()
			const n = 5
			for i := range n {
				_, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags", "application/json", `{"context":{"plan":"premium"}}`)
				if !strings.Contains(body, `{"key":"color","reason":"TARGETING_MATCH","variant":"red","value":"red","metadata":{"team":"web"}}`) {
					t.Fatalf("bulk %d: %s", i, body)
				}
				if s.cache != nil {
					s.cache.Wait()
				}
				_, _, body = do(t, "POST", base+"/ofrep/v1/evaluate/flags/color", "application/json", `{"context":{"plan":"premium"}}`)
				if !strings.Contains(body, `"variant":"red"`) {
					t.Fatalf("single %d: %s", i, body)
				}
				if s.cache != nil {
					s.cache.Wait()
				}
			}
			_, _, metrics := do(t, "GET", base+"/metrics", "", "")
			for _, want := range []string{
				`pennon_evaluations_total{flag="color",reason="TARGETING_MATCH",variant="red"} 10`,
				`pennon_evaluations_total{flag="static-on",reason="STATIC",variant="on"} 5`,
				`pennon_evaluations_total{flag="ratio",reason="STATIC",variant="low"} 5`,
				`pennon_evaluations_total{flag="disabled",reason="DISABLED",variant=""} 5`,
				`pennon_evaluations_total{flag="no-default",reason="DEFAULT",variant=""} 5`,
				`pennon_evaluations_total{flag="broken",reason="DEFAULT",variant="a"} 5`,
			} {
				if !strings.Contains(metrics, want+"\n") {
					t.Errorf("metrics lack %s", want)
				}
			}
			hits := testutil.ToFloat64(s.m.cacheHit)
			// Single answers are cached on the first miss, bulk answers on
			// the second (a context's first bulk request is not cached).
			if c.cacheBytes < 0 && hits != 0 || c.cacheBytes >= 0 && hits < (n-1)+(n-2) {
				t.Errorf("cache hits %v, want %d", hits, (n-1)+(n-2))
			}
		})
	}
}

// TestBulkAdmission: a window of lookups with fewer than 1 in 4 hits
// throttles caching of bulk answers to 1 in 8; a window with enough hits
// lifts it.
func TestBulkAdmission(t *testing.T) {
	var a bulkAdmission
	admitted := func() int {
		n := 0
		for range 80 {
			if a.admit() {
				n++
			}
		}
		return n
	}
	if n := admitted(); n != 80 {
		t.Fatalf("fresh: %d of 80 admitted, want all", n)
	}
	for i := range bulkAdmitWindow {
		a.observe(i%5 == 0) // 20 % hits
	}
	if n := admitted(); n != 10 {
		t.Fatalf("after a 20%% window: %d of 80 admitted, want 10", n)
	}
	for i := range bulkAdmitWindow {
		a.observe(i%2 == 0) // 50 % hits
	}
	if n := admitted(); n != 80 {
		t.Fatalf("after a 50%% window: %d of 80 admitted, want all", n)
	}
}

// TestBulkCacheFollowsSnapshot: a cached bulk answer is never served for
// another snapshot — not for a new version, and not for a different flag
// set that arrives under the same version (a rejected or rewound set).
func TestBulkCacheFollowsSnapshot(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s := startServer(t, &h)
	base := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags"
	ask := func(want string) {
		t.Helper()
		for range 3 { // first miss, second miss (cached), hit
			_, _, body := do(t, "POST", base, "application/json", `{"context":{"plan":"premium"}}`)
			if !strings.Contains(body, want) {
				t.Fatalf("answer lacks %s:\n%s", want, body)
			}
			s.cache.Wait()
		}
	}
	ask(`{"key":"color","reason":"TARGETING_MATCH","variant":"red","value":"red","metadata":{"team":"web"}}`)
	if testutil.ToFloat64(s.m.cacheHit) == 0 {
		t.Fatal("the third request was not a cache hit")
	}
	same := strings.Replace(testFlags, `"premium"]}, "red", "blue"]`, `"premium"]}, "blue", "red"]`, 1)
	h.Store(mustSnapshot(t, same, 1))
	ask(`{"key":"color","reason":"TARGETING_MATCH","variant":"blue","value":"blue","metadata":{"team":"web"}}`)
	h.Store(mustSnapshot(t, testFlags, 2))
	ask(`{"key":"color","reason":"TARGETING_MATCH","variant":"red","value":"red","metadata":{"team":"web"}}`)
}

// TestBulkPlanBuiltAhead: once a sidecar has served a bulk request, the
// plan for each new snapshot is built when the snapshot arrives, not by
// the next bulk request.
func TestBulkPlanBuiltAhead(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s := startServer(t, &h)
	if p := s.plan.Load(); p != nil {
		t.Fatal("a plan was built before any bulk request")
	}
	if code, _, body := do(t, "POST", "http://"+s.Addr()+"/ofrep/v1/evaluate/flags", "application/json", `{}`); code != 200 {
		t.Fatalf("bulk: %d %s", code, body)
	}
	next := mustSnapshot(t, testFlags, 2)
	h.Store(next)
	checkfor.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if p := s.plan.Load(); p == nil || p.snap != next {
			return fmt.Errorf("plan not yet built for version 2")
		}
		return nil
	})
}

var etagRE = regexp.MustCompile(`^"(\d+)-[0-9a-f]{24}"$`)

// etagShape reduces a bulk ETag to its version and shape.
func etagShape(etag string) string {
	if m := etagRE.FindStringSubmatch(etag); m != nil {
		return `"` + m[1] + `-<24 hex>"`
	}
	return etag
}

// TestBulkPlanBuiltOnce: concurrent first bulk requests on one snapshot
// share one plan instead of each building its own (a second and tens of
// megabytes each at 100,000 flags), and all get the same answer.
func TestBulkPlanBuiltOnce(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &h, CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	handler := s.Handler()
	const n = 8
	bodies := make([]string, n)
	built := planIDs.Load()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ctx fasthttp.RequestCtx
			request(&ctx, "POST", "/ofrep/v1/evaluate/flags", []byte(`{"context":{"plan":"premium"}}`))
			handler(&ctx)
			bodies[i] = string(ctx.Response.Body())
		}()
	}
	wg.Wait()
	if b := planIDs.Load() - built; b != 1 {
		t.Errorf("%d bulk plans built for one snapshot, want 1", b)
	}
	for i, b := range bodies {
		if b != bodies[0] || !strings.Contains(b, `"key":"color"`) {
			t.Fatalf("answer %d differs or is wrong:\n%s\n%s", i, b, bodies[0])
		}
	}
	// A new snapshot gets a new plan; the old one is retired.
	h.Store(mustSnapshot(t, testFlags, 2))
	var ctx fasthttp.RequestCtx
	request(&ctx, "POST", "/ofrep/v1/evaluate/flags", []byte(`{"context":{}}`))
	handler(&ctx)
	if p := s.plan.Load(); p == nil || p.snap != h.Current() {
		t.Fatal("the plan was not rebuilt for the new snapshot")
	}
}

// TestBulkAnswerOverPoolLimit: an answer bigger than maxPooledBuffer is
// streamed rather than swapped in; over a kept-alive
// connection every such answer must still arrive whole and alike, with a
// small answer from another snapshot in between.
func TestBulkAnswerOverPoolLimit(t *testing.T) {
	const n = 14000 // ~95 bytes each: past 1 MiB
	var h evaluator.Holder
	h.Store(mustSnapshot(t, planFlags(n), 1))
	s := startServer(t, &h, func(o *Options) { o.CacheBytes = -1 })
	url := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags"
	var first string
	for i := range 3 {
		code, _, body := do(t, "POST", url, "application/json", `{"context":{"plan":"premium"}}`)
		if code != 200 || len(body) <= maxPooledBuffer {
			t.Fatalf("request %d: %d, %d bytes (want > %d)", i, code, len(body), maxPooledBuffer)
		}
		var ans struct {
			Flags []struct{ Key, Variant string }
		}
		if err := json.Unmarshal([]byte(body), &ans); err != nil || len(ans.Flags) != n || ans.Flags[n-1].Variant != "on" {
			t.Fatalf("request %d: %d flags, %v", i, len(ans.Flags), err)
		}
		if i == 0 {
			first = body
		} else if body != first {
			t.Fatalf("request %d: the answer changed", i)
		}
	}
	h.Store(mustSnapshot(t, testFlags, 2))
	if code, _, body := do(t, "POST", url, "application/json", `{"context":{"plan":"premium"}}`); code != 200 || !strings.Contains(body, `"key":"color"`) || len(body) > 4096 {
		t.Fatalf("small answer after big ones: %d %q", code, body)
	}
}

// TestBulkAnswerOverCacheShareNotCached: a bulk answer larger than
// 1/maxBulkEntryShare of the cache is answered, never cached (one would
// evict everything else); with a cache large enough the same answers are
// cached and hit.
func TestBulkAnswerOverCacheShareNotCached(t *testing.T) {
	doc := planFlags(100) // a ~9.7 KB answer
	for _, tc := range []struct {
		cacheBytes int64
		wantHits   bool
	}{
		{64 << 10, false}, // limit 4 KiB
		{1 << 20, true},   // limit 64 KiB
	} {
		var h evaluator.Holder
		h.Store(mustSnapshot(t, doc, 1))
		s := startServer(t, &h, func(o *Options) { o.CacheBytes = tc.cacheBytes })
		url := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags"
		var first string
		for i := range 4 {
			code, _, body := do(t, "POST", url, "application/json", `{"context":{"plan":"premium"}}`)
			if code != 200 || !strings.Contains(body, `{"key":"flag-00099","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{}}`) {
				t.Fatalf("cache %d, request %d: %d %.200q", tc.cacheBytes, i, code, body)
			}
			if i == 0 {
				first = body
			} else if body != first {
				t.Fatalf("cache %d, request %d: the answer changed", tc.cacheBytes, i)
			}
			s.cache.Wait()
		}
		if hits := testutil.ToFloat64(s.m.cacheHit); (hits > 0) != tc.wantHits {
			t.Fatalf("cache %d bytes, %d-byte answers: %v hits, want hits: %v", tc.cacheBytes, len(first), hits, tc.wantHits)
		}
	}
}

// TestBulkOutcomeAddedOnce: requests racing to add a flag's first outcome
// leave it in the list once (the loser re-checks under the lock), so
// duplicates never use up the list's slots.
func TestBulkOutcomeAddedOnce(t *testing.T) {
	snap := mustSnapshot(t, testFlags, 1)
	m := newMetrics(prometheus.NewRegistry(), nil, 0)
	for round := range 20 {
		p := newBulkPlan(snap, m)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.appendAnswer(nil, evaluator.ContextFromMap(map[string]any{"plan": "premium"}), m, nil)
			}()
		}
		wg.Wait()
		for i := range p.lists {
			l := p.lists[i].list.Load()
			if l == nil {
				continue // a flag that answered with an error: not listed
			}
			for a := range *l {
				for b := a + 1; b < len(*l); b++ {
					x, y := (*l)[a], (*l)[b]
					if x.variant == y.variant && x.reason == y.reason && x.meta == y.meta && x.metaLen == y.metaLen {
						t.Fatalf("round %d, %s: outcome %s/%s listed twice", round, p.segs[i].flag.Key(), x.variant, x.reason)
					}
				}
			}
		}
	}
}

// planFlags is a flag set of n flags (flag-00000, ...), each answering
// "off" for plan "x" and "on" otherwise: ~95 bytes of bulk answer each.
func planFlags(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"flag-%05d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"==":[{"var":"plan"},"x"]},"off","on"]}}`, i)
	}
	sb.WriteString(`}}`)
	return sb.String()
}

// bigFlagSet is a flag set whose bulk answer is over maxPooledBuffer.
func bigFlagSet() string { return planFlags(14000) }

// TestBigAnswersConcurrent: concurrent big (streamed) answers for two
// contexts over real connections, HTTP/1.0 and HTTP/1.1 clients side by
// side, each arrive exactly as the answer for their context.
func TestBigAnswersConcurrent(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, bigFlagSet(), 1))
	s := startServer(t, &h)
	const path = "/ofrep/v1/evaluate/flags"
	ctxs := []string{`{"context":{"plan":"premium"}}`, `{"context":{"plan":"x"}}`}
	want := make([]string, len(ctxs))
	for i, c := range ctxs {
		_, want[i] = rawPost(t, s.Addr(), "HTTP/1.0", path, c)
	}
	if want[0] == want[1] || len(want[0]) <= maxPooledBuffer {
		t.Fatalf("the two contexts must give different big answers (%d, %d bytes)", len(want[0]), len(want[1]))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 6 {
		wg.Add(1)
		go func() { // no t.Fatal off the test goroutine
			defer wg.Done()
			proto := []string{"HTTP/1.0", "HTTP/1.1"}[g%2]
			for r := range 5 {
				c := (g + r) % 2
				_, b, err := postRaw(s.Addr(), proto, path, ctxs[c])
				if err != nil {
					errs <- err
					return
				}
				if b != want[c] {
					errs <- fmt.Errorf("goroutine %d, request %d (%s, context %d): a %d-byte answer that is not the one for its context", g, r, proto, c, len(b))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
