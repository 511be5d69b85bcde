package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage"
)

// usagePlane is a control plane with telemetry and usage aggregation on
// the fixture's NATS, store and tokens; restart replaces it.
type usagePlane struct {
	f    *fixture
	ing  *telemetry.Ingest
	agg  *usage.Aggregator
	stop func()
	mu   sync.Mutex
	base string
}

func startUsagePlane(t *testing.T, f *fixture) *usagePlane {
	p := &usagePlane{f: f}
	p.start(t)
	t.Cleanup(func() { p.halt(t) })
	return p
}

func (p *usagePlane) start(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	ing, err := telemetry.OpenIngest(ctx, p.f.js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := usage.Open(ctx, usage.Options{JetStream: p.f.js, Ingest: ing, Changes: p.f.store, FlushEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Addr: "127.0.0.1:0", Store: p.f.store, Tokens: p.f.toks, JetStream: p.f.js, DataDir: t.TempDir(), Signer: p.f.key,
		Logger: zap.NewNop(), Telemetry: ing, Usage: agg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx) }()
	p.mu.Lock()
	p.ing, p.agg, p.base = ing, agg, "http://"+s.Addr()
	p.stop = func() { cancel(); <-done; _ = agg.Close() }
	p.mu.Unlock()
}

func (p *usagePlane) halt(t *testing.T) {
	p.mu.Lock()
	stop := p.stop
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (p *usagePlane) url() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base
}

// send is a sidecar's API transport: POST /api/v1/envs/{env}/telemetry
// with its token (the polling-mode path).
func (p *usagePlane) send(token string) telemetry.TransportFunc {
	return func(ctx context.Context, b telemetry.Batch) error {
		data, _ := json.Marshal(b)
		req, err := http.NewRequestWithContext(ctx, "POST", p.url()+"/api/v1/envs/"+b.Env+"/telemetry", bytes.NewReader(data))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == 200:
			return nil
		case resp.StatusCode == 422:
			return fmt.Errorf("%w: %s", telemetry.ErrRefused, body)
		default:
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
	}
}

// testSidecar is a real sidecar server with a real shipper.
type testSidecar struct {
	addr string
	sh   *telemetry.Shipper
	// stop is graceful: drain, then the shipper's last delivery. Without
	// run (the shipper delivers only when the test flushes it) stop is a
	// kill: what was not flushed is never shipped.
	stop func()
}

func startTestSidecar(t *testing.T, snap *evaluator.Snapshot, tr telemetry.Transport, run bool) *testSidecar {
	t.Helper()
	var h evaluator.Holder
	h.Store(snap)
	srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: &h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	sh, err := telemetry.NewShipper(tr, telemetry.ShipperOptions{Env: "dev", Sidecar: "sc-1", Interval: time.Hour}, srv.UsageSource())
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancelSrv := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	shCtx, cancelSh := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() {
		if run {
			sh.Run(shCtx)
		}
		close(shipped)
	}()
	sc := &testSidecar{addr: srv.Addr(), sh: sh}
	var once sync.Once
	sc.stop = func() {
		once.Do(func() {
			cancelSrv()
			<-served
			cancelSh() // as cmd/pennon: the shipper stops after the server drained
			<-shipped
		})
	}
	t.Cleanup(sc.stop)
	return sc
}

// traffic is one round of evaluations; usageRound is what it adds up to.
func (sc *testSidecar) traffic(t *testing.T) {
	t.Helper()
	reqs := []struct {
		path, app, ctx string
		n              int
	}{
		{"/ofrep/v1/evaluate/flags/checkout", "web", `{"context":{"plan":"premium"}}`, 5},
		{"/ofrep/v1/evaluate/flags/checkout", "", `{"context":{"plan":"basic"}}`, 3},
		{"/ofrep/v1/evaluate/flags/banner", "", `{}`, 4},
		{"/ofrep/v1/evaluate/flags", "mobile", `{"context":{"plan":"premium"}}`, 2},
		{"/ofrep/v1/evaluate/flags/nope", "web", `{}`, 1},
	}
	for _, r := range reqs {
		for range r.n {
			req, _ := http.NewRequest("POST", "http://"+sc.addr+r.path, strings.NewReader(r.ctx))
			req.Header.Set("Content-Type", "application/json")
			if r.app != "" {
				req.Header.Set(proxy.AppHeader, r.app)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// usageSummary renders GET /usage's answer for comparison.
func usageSummary(t *testing.T, p *usagePlane, token string) (string, uint64) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.url()+"/api/v1/envs/dev/usage", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Flags     map[string]usage.FlagUsage `json:"flags"`
		Totals24h usage.EnvTotals            `json:"totals24h"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET usage: %d %v", resp.StatusCode, err)
	}
	out := ""
	for _, k := range []string{"checkout", "banner"} {
		u := body.Flags[k]
		out += fmt.Sprintf("%s: 24h=%d 7d=%d variants=%v apps=%v; ", k, u.Last24h, u.Last7d, u.Variants24h, u.Apps)
	}
	return out + fmt.Sprintf("total=%d unknown=%d sidecars=%v", body.Totals24h.Evaluations, body.Totals24h.UnknownFlags, body.Totals24h.Sidecars), body.Totals24h.Evaluations
}

func wantUsage(rounds uint64) string {
	n := rounds
	return fmt.Sprintf("checkout: 24h=%d 7d=%d variants=map[off:%d on:%d] apps=map[mobile:%d web:%d]; "+
		"banner: 24h=%d 7d=%d variants=map[shown:%d] apps=map[mobile:%d]; total=%d unknown=%d sidecars=map[sc-1:%d]",
		10*n, 10*n, 3*n, 7*n, 2*n, 5*n, 6*n, 6*n, 6*n, 2*n, 17*n, n, 17*n)
}

// waitUsage polls the API until it reports every evaluation of rounds
// rounds (or times out), then compares the whole summary.
func waitUsage(t *testing.T, p *usagePlane, token string, rounds uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, total := usageSummary(t, p, token)
		if total >= 17*rounds || time.Now().After(deadline) {
			if want := wantUsage(rounds); got != want {
				t.Fatalf("after %d rounds:\n got %s\nwant %s", rounds, got, want)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUsageEndToEnd: real sidecars count evaluations (single, bulk, cached,
// unknown keys, per app), ship them over the API path to a real control
// plane, which aggregates them from the telemetry stream. The totals add up
// exactly across a control-plane restart (batches sent while it is down
// are kept by the sidecar and delivered after) and a sidecar restart (a
// graceful stop ships what was counted; a killed one loses only what it
// had not shipped).
func TestUsageEndToEnd(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cs := &config.Changeset{Env: "dev", Author: "test", Changes: []config.Change{
		{Flag: "checkout", Op: config.OpPut, Definition: json.RawMessage(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
			"targeting":{"if":[{"==":[{"var":"plan"},"premium"]},"on","off"]}}`)},
		{Flag: "banner", Op: config.OpPut, Definition: json.RawMessage(`{"state":"ENABLED","variants":{"shown":"hello"},"defaultVariant":"shown"}`)},
	}}
	if _, err := f.store.Commit(ctx, cs); err != nil {
		t.Fatal(err)
	}
	head, err := f.store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := head.Doc.Compile(head.Version)
	if err != nil {
		t.Fatal(err)
	}
	token := f.tokens["viewer"]
	p := startUsagePlane(t, f)
	a := startTestSidecar(t, snap, p.send(token), true)

	a.traffic(t)
	if err := a.sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitUsage(t, p, token, 1)

	// Control-plane restart: what the sidecar counts meanwhile waits.
	p.halt(t)
	a.traffic(t)
	if err := a.sh.Flush(ctx); err == nil {
		t.Fatal("delivery succeeded with the control plane down")
	}
	if a.sh.Pending() != 1 {
		t.Fatalf("%d batches pending, want 1", a.sh.Pending())
	}
	p.start(t)
	if err := a.sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitUsage(t, p, token, 2)

	// Sidecar restart: a graceful stop ships what it counted.
	a.traffic(t)
	a.stop()
	b := startTestSidecar(t, snap, p.send(token), true)
	b.traffic(t)
	if err := b.sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitUsage(t, p, token, 4)

	// A sidecar killed loses exactly what it had not shipped: one round
	// shipped, one counted and never sent.
	b.stop()
	c := startTestSidecar(t, snap, p.send(token), false)
	c.traffic(t)
	if err := c.sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c.traffic(t)
	c.stop()
	waitUsage(t, p, token, 5)

	// One flag, with its per-day series and an hour series that add up.
	code, body := f.doURL(t, p.url(), token, "/api/v1/envs/dev/usage?flag=checkout&days=2&granularity=hour&since=3h")
	var one struct {
		Flag   string          `json:"flag"`
		Usage  usage.FlagUsage `json:"usage"`
		Series []usage.Point   `json:"series"`
	}
	if err := json.Unmarshal([]byte(body), &one); err != nil || code != 200 {
		t.Fatalf("GET usage?flag: %d %s", code, body)
	}
	var hours, days, daysOn uint64
	for _, pt := range one.Series {
		hours += pt.Evaluations
	}
	for _, d := range one.Usage.Days { // two days: the test may straddle midnight
		days, daysOn = days+d.Evaluations, daysOn+d.Variants["on"]
	}
	if one.Flag != "checkout" || len(one.Usage.Days) != 2 || days != 50 || daysOn != 35 || hours != 50 {
		t.Errorf("GET usage?flag=checkout: %s", body)
	}
	code, body = f.doURL(t, p.url(), token, "/api/v1/envs/dev/anomalies")
	var an struct {
		Anomalies []usage.Anomaly `json:"anomalies"`
	}
	if err := json.Unmarshal([]byte(body), &an); err != nil || code != 200 || an.Anomalies == nil || len(an.Anomalies) != 0 {
		t.Errorf("GET anomalies: %d %s; want an empty list", code, body)
	}
}

func (f *fixture) doURL(t *testing.T, base, token, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUsageQueryValidation(t *testing.T) {
	f := setup(t)
	p := startUsagePlane(t, f)
	token := f.tokens["viewer"]
	cases := []struct {
		query, field, message string
	}{
		{"granularity=week", "granularity", `granularity must be minute, hour or day, got "week"`},
		{"since=24h", "since", "since selects where a series starts: add granularity=minute, hour or day"},
		{"granularity=minute&since=72h", "since", "minute rollups are kept for 48h0m0s: since must be after"},
		{"granularity=hour&since=2999-01-01T00:00:00Z", "since", "since 2999-01-01T00:00:00Z is in the future"},
		{"granularity=hour&since=yesterday", "since", "since must be an RFC 3339 time"},
		{"days=0", "days", `days must be a whole number from 1 to 400, got "0"`},
		{"flag=", "flag", "flag must be a flag key"},
		{"color=blue", "color", `unknown query parameter "color"`},
	}
	for _, c := range cases {
		code, body := f.doURL(t, p.url(), token, "/api/v1/envs/dev/usage?"+c.query)
		var e struct {
			Error APIError `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("%s: %v: %s", c.query, err, body)
		}
		if code != 400 || e.Error.Code != CodeBadRequest || e.Error.Field != c.field || !strings.Contains(e.Error.Message, c.message) {
			t.Errorf("?%s: %d %s; want 400 bad_request on %s saying %q", c.query, code, body, c.field, c.message)
		}
	}
	if code, body := f.doURL(t, p.url(), f.admin, "/api/v1/envs/nowhere/usage"); code != 404 {
		t.Errorf("unknown env: %d %s", code, body)
	}
	if code, body := f.do(t, token, "GET", "/api/v1/envs/dev/usage", ""); code != 501 || !strings.Contains(body, "not_configured") {
		t.Errorf("without Options.Usage: %d %s", code, body)
	}
}
