package proxy

import (
	"bufio"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/usage/delta"
)

// takeUsage drains s's usage source and returns the counts as
// "flag/variant/reason/code" and "app/flag" → n.
func takeUsage(t *testing.T, s *Server) (map[string]uint64, map[string]uint64) {
	t.Helper()
	data, err := s.UsageSource().Take()
	if err != nil {
		t.Fatal(err)
	}
	counts, apps := map[string]uint64{}, map[string]uint64{}
	if data == nil {
		return counts, apps
	}
	p, err := delta.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Counts {
		counts[c.Flag+"/"+c.Variant+"/"+c.Reason+"/"+c.Code] += c.N
	}
	for _, a := range p.Apps {
		apps[a.App+"/"+a.Flag] += a.N
	}
	return counts, apps
}

func TestUsageCountsEveryAnswer(t *testing.T) {
	var hold evaluator.Holder
	hold.Store(mustSnapshot(t, benchFlags, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &hold, CacheMinCost: -1}) // cache every cacheable flag
	if err != nil {
		t.Fatal(err)
	}
	defer s.cache.Close()
	h := s.Handler()
	reqs := []struct {
		path, app string
		n         int
	}{
		{"/ofrep/v1/evaluate/flags/targeted", "checkout", 3}, // cached after the first: hits count too
		{"/ofrep/v1/evaluate/flags/static", "", 2},
		{"/ofrep/v1/evaluate/flags/nope", "checkout", 1},
		{"/ofrep/v1/evaluate/flags", "web", 2}, // bulk: every flag once per answer
		{"/ofrep/v1/evaluate/flags/static", "bad name!", 1},
	}
	var ctx fasthttp.RequestCtx
	for _, r := range reqs {
		for range r.n {
			request(&ctx, "POST", r.path, []byte(benchContext))
			if r.app != "" {
				ctx.Request.Header.Set(AppHeader, r.app)
			}
			h(&ctx)
			s.cache.Wait() // make the cached answer visible to the next request
		}
	}
	counts, apps := takeUsage(t, s)
	wantCounts := map[string]uint64{
		"targeted/on/TARGETING_MATCH/": 5,
		"static/on/STATIC/":            5,
		"//ERROR/FLAG_NOT_FOUND":       1,
	}
	wantApps := map[string]uint64{
		"checkout/targeted": 3, "checkout/": 1,
		"web/static": 2, "web/targeted": 2,
		"other/static": 1,
	}
	if fmt.Sprint(counts) != fmt.Sprint(wantCounts) {
		t.Errorf("counts = %v, want %v", counts, wantCounts)
	}
	if fmt.Sprint(apps) != fmt.Sprint(wantApps) {
		t.Errorf("apps = %v, want %v", apps, wantApps)
	}
	if hits := s.cacheStats().Hits; hits == 0 {
		t.Errorf("no cache hits: the test does not exercise the cached path")
	}
	// Deltas: nothing new, nothing reported.
	if data, err := s.UsageSource().Take(); err != nil || data != nil {
		t.Errorf("second Take = %s, %v; want nothing", data, err)
	}
}

func TestUsageAppsBounded(t *testing.T) {
	s := newTestServer(t, benchFlags)
	h := s.Handler()
	var ctx fasthttp.RequestCtx
	for i := range MaxApps + 6 {
		request(&ctx, "POST", "/ofrep/v1/evaluate/flags/static", nil)
		ctx.Request.Header.Set(AppHeader, fmt.Sprintf("app-%03d", i))
		h(&ctx)
	}
	_, apps := takeUsage(t, s)
	var names []string
	for k := range apps {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) != MaxApps+1 || apps["other/static"] != 6 || apps["app-000/static"] != 1 {
		t.Errorf("apps = %v; want %d named apps with 1 each and other/static 6", apps, MaxApps)
	}
}

func TestUsageOff(t *testing.T) {
	var hold evaluator.Holder
	hold.Store(mustSnapshot(t, benchFlags, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &hold, NoUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.cache.Close()
	if s.UsageSource() != nil {
		t.Fatal("UsageSource with NoUsage is not nil")
	}
	var ctx fasthttp.RequestCtx
	request(&ctx, "POST", "/ofrep/v1/evaluate/flags/static", nil)
	ctx.Request.Header.Set(AppHeader, "x")
	s.Handler()(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// TestUsageTakeKeepsWhatDoesNotFit: a bulk answer over 2,000 flags with
// 200-character keys counts more than one payload carries; Take returns at
// most about usageBudget and keeps the rest for the next Take, losing
// nothing.
func TestUsageTakeKeepsWhatDoesNotFit(t *testing.T) {
	const flags = 2000
	long := strings.Repeat("k", 190)
	doc := []byte(`{"flags":{`)
	for i := range flags {
		if i > 0 {
			doc = append(doc, ',')
		}
		doc = fmt.Appendf(doc, `"%s-%05d":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`, long, i)
	}
	doc = append(doc, `}}`...)
	s := newTestServer(t, string(doc))
	var ctx fasthttp.RequestCtx
	request(&ctx, "POST", "/ofrep/v1/evaluate/flags", nil)
	s.Handler()(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("bulk: %d", ctx.Response.StatusCode())
	}
	var total uint64
	takes := 0
	for {
		data, err := s.UsageSource().Take()
		if err != nil {
			t.Fatal(err)
		}
		if data == nil {
			break
		}
		takes++
		if len(data) > usageBudget+4096 {
			t.Fatalf("take %d: %d bytes, budget %d", takes, len(data), usageBudget)
		}
		p, err := delta.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Counts {
			total += c.N
		}
	}
	if takes < 2 || total != flags {
		t.Errorf("%d takes carried %d evaluations; want at least 2 takes and %d", takes, total, flags)
	}
}

// TestUsageAppHeaderAnyCase: the header name is matched in any case, as
// fasthttp's parser normalizes it.
func TestUsageAppHeaderAnyCase(t *testing.T) {
	s := newTestServer(t, benchFlags)
	for _, raw := range []string{
		"POST /ofrep/v1/evaluate/flags/static HTTP/1.1\r\nHost: x\r\nx-pennon-app: lower\r\nContent-Length: 0\r\n\r\n",
		"POST /ofrep/v1/evaluate/flags/static HTTP/1.1\r\nHost: x\r\nX-PENNON-APP: upper\r\nContent-Length: 0\r\n\r\n",
	} {
		var ctx fasthttp.RequestCtx
		if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
		s.Handler()(&ctx)
	}
	_, apps := takeUsage(t, s)
	if fmt.Sprint(apps) != "map[lower/static:1 upper/static:1]" {
		t.Errorf("apps = %v", apps)
	}
}

// Evaluations through flagd's gRPC services (Server.EvaluateFlag) count
// like OFREP ones: a flag used only by gRPC clients is not "unused".
func TestUsageCountsGRPCEvaluations(t *testing.T) {
	var hold evaluator.Holder
	hold.Store(mustSnapshot(t, benchFlags, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &hold})
	if err != nil {
		t.Fatal(err)
	}
	defer s.cache.Close()
	snap := hold.Current()
	var ec evaluator.Context
	for range 3 {
		if r := s.EvaluateFlag(snap, snap.Flag("static"), &ec); r.Variant != "on" {
			t.Fatalf("static: %+v", r)
		}
	}
	counts, _ := takeUsage(t, s)
	if n := counts["static/on/STATIC/"]; n != 3 {
		t.Fatalf("usage counts %v, want static/on/STATIC/ = 3", counts)
	}
}

// TestEvaluationSeriesCapped: past MaxFlagSeries label sets, evaluations
// count in the flag="_other" series of their reason, so a sidecar serving
// a huge flag set does not give every flag a Prometheus series; the series
// still add up to every evaluation, and usage reports stay per flag.
func TestEvaluationSeriesCapped(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s := startServer(t, &h, func(o *Options) { o.MaxFlagSeries = 2; o.CacheBytes = -1 })
	base := "http://" + s.Addr()
	for _, flag := range []string{"static-on", "ratio", "static-on", "disabled", "no-default"} {
		if code, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/"+flag, "application/json", `{"context":{}}`); code != 200 {
			t.Fatalf("%s: %d %s", flag, code, body)
		}
	}
	_, _, metrics := do(t, "GET", base+"/metrics", "", "")
	for _, want := range []string{
		`pennon_evaluations_total{flag="static-on",reason="STATIC",variant="on"} 2`,
		`pennon_evaluations_total{flag="ratio",reason="STATIC",variant="low"} 1`,
		`pennon_evaluations_total{flag="_other",reason="DISABLED",variant="_other"} 1`,
		`pennon_evaluations_total{flag="_other",reason="DEFAULT",variant="_other"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `flag="disabled"`) || strings.Contains(metrics, `flag="no-default"`) {
		t.Errorf("a flag past the cap has its own series:\n%s", metrics)
	}
	counts, _ := takeUsage(t, s)
	for k, n := range map[string]uint64{"static-on/on/STATIC/": 2, "ratio/low/STATIC/": 1, "disabled//DISABLED/": 1, "no-default//DEFAULT/": 1} {
		if counts[k] != n {
			t.Errorf("usage %s = %d, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
}
