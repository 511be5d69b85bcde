package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"
)

// fasthttp's server keeps a process-wide date updater and lets each worker
// pool's cleaner finish its 10 s sleep after Shutdown; both are fasthttp's,
// not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

// ofrepResponder is a tiny OFREP-shaped server: it checks each request the
// way a real server would read it and counts what it saw.
type ofrepResponder struct {
	single, bulk, bad atomic.Int64
}

func startResponder(t *testing.T, fail bool) (*Target, *ofrepResponder) {
	t.Helper()
	r := &ofrepResponder{}
	tg, err := startFastHTTP("responder", func(ctx *fasthttp.RequestCtx) {
		var body struct {
			Context map[string]any `json:"context"`
		}
		path := string(ctx.Path())
		if string(ctx.Request.Header.Peek("X-Api-Key")) != "secret" {
			r.bad.Add(1)
			ctx.SetStatusCode(401)
			return
		}
		if !ctx.IsPost() || json.Unmarshal(ctx.PostBody(), &body) != nil || body.Context["targetingKey"] == nil {
			r.bad.Add(1)
			ctx.SetStatusCode(400)
			return
		}
		if fail {
			ctx.SetStatusCode(404)
			ctx.SetBodyString(`{"errorCode":"FLAG_NOT_FOUND"}`)
			return
		}
		switch {
		case path == bulkPath:
			r.bulk.Add(1)
		case strings.HasPrefix(path, singlePath):
			r.single.Add(1)
		default:
			r.bad.Add(1)
			ctx.SetStatusCode(404)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"key":"k","value":true,"variant":"on","reason":"STATIC"}`)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Error(err)
		}
	})
	return tg, r
}

func TestRunScenarios(t *testing.T) {
	tg, r := startResponder(t, false)
	// gRPC scenarios need a gRPC server: the sidecar's flagd service.
	grpcTarget, err := StartPennonGRPC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := grpcTarget.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, name := range ScenarioNames() {
		for _, rate := range []float64{0, 2000} {
			t.Run(name+"/"+modeName(rate), func(t *testing.T) {
				sc, err := NewScenario(name, FlagKeys{})
				if err != nil {
					t.Fatal(err)
				}
				var progress bytes.Buffer
				url := tg.URL
				if sc.GRPC() {
					url = grpcTarget.URL
				}
				res, err := Run(context.Background(), Options{
					URL: url, Scenario: sc, Connections: 4, Rate: rate,
					Requests: 300, Duration: time.Minute, Progress: &progress, Headers: []string{"X-Api-Key: secret"},
				})
				if err != nil {
					t.Fatal(err)
				}
				if res.Requests != 300 || res.Errors != 0 {
					t.Fatalf("requests %d errors %d (first %q), want 300 and 0", res.Requests, res.Errors, res.FirstError)
				}
				if res.StatusCodes["200"] != 300 {
					t.Errorf("status codes %v, want 300×200", res.StatusCodes)
				}
				l := res.Latency
				if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max) {
					t.Errorf("latency summary not ordered: %+v", l)
				}
				if len(res.Timeline) == 0 {
					t.Error("empty timeline")
				}
				if res.Throughput <= 0 {
					t.Errorf("throughput %v", res.Throughput)
				}
			})
		}
	}
	if r.bad.Load() != 0 {
		t.Errorf("responder saw %d malformed requests", r.bad.Load())
	}
	if r.bulk.Load() == 0 || r.single.Load() == 0 {
		t.Errorf("bulk %d single %d: both scenarios kinds should have been sent", r.bulk.Load(), r.single.Load())
	}
}

func modeName(rate float64) string {
	if rate > 0 {
		return "open"
	}
	return "closed"
}

func TestRunCountsErrors(t *testing.T) {
	tg, _ := startResponder(t, true)
	sc, _ := NewScenario("static", FlagKeys{})
	res, err := Run(context.Background(), Options{URL: tg.URL, Scenario: sc, Connections: 2, Requests: 50, Headers: []string{"X-Api-Key: secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 50 || res.StatusCodes["404"] != 50 || res.FirstError != "HTTP 404" {
		t.Fatalf("errors %d codes %v first %q, want 50 × HTTP 404", res.Errors, res.StatusCodes, res.FirstError)
	}
}

func TestRunTransportErrors(t *testing.T) {
	tg, err := StartBare()
	if err != nil {
		t.Fatal(err)
	}
	url := tg.URL
	if err := tg.Close(); err != nil { // nothing listens there any more
		t.Fatal(err)
	}
	sc, _ := NewScenario("static", FlagKeys{})
	res, err := Run(context.Background(), Options{URL: url, Scenario: sc, Connections: 1, Requests: 5, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 5 || res.StatusCodes["transport"] != 5 || res.FirstError == "" {
		t.Fatalf("errors %d codes %v first %q, want 5 transport errors", res.Errors, res.StatusCodes, res.FirstError)
	}
}

func TestRunWarmupAndDuration(t *testing.T) {
	tg, err := StartBare()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	sc, _ := NewScenario("static", FlagKeys{})
	var progress bytes.Buffer
	res, err := Run(context.Background(), Options{
		URL: tg.URL, Scenario: sc, Connections: 2, Rate: 200,
		Warmup: 1100 * time.Millisecond, Duration: 1500 * time.Millisecond, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "warming up") || !strings.Contains(progress.String(), "req/s") {
		t.Errorf("progress lines missing warm-up or rate:\n%s", progress.String())
	}
	// Open loop at 200/s for 1.5 s: at most 300 intended sends are measured.
	if res.Requests == 0 || res.Requests > 301 {
		t.Errorf("requests %d, want 1..301 for 1.5 s at 200/s", res.Requests)
	}
	if res.WarmupSec != 1.1 || res.ElapsedSec < 1.5 {
		t.Errorf("warmup %v elapsed %v", res.WarmupSec, res.ElapsedSec)
	}
}

func TestRunCancel(t *testing.T) {
	tg, err := StartBare()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	sc, _ := NewScenario("static", FlagKeys{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, Options{URL: tg.URL, Scenario: sc, Connections: 2, Duration: time.Hour})
	if err != context.Canceled || res == nil {
		t.Fatalf("got %v, %v; want partial result and context.Canceled", res, err)
	}
}

func TestOptionsErrors(t *testing.T) {
	sc, _ := NewScenario("static", FlagKeys{})
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no bound", Options{URL: "http://127.0.0.1:1", Scenario: sc}, "set at least one bound"},
		{"remote", Options{URL: "http://192.0.2.1:8016", Scenario: sc, Requests: 1}, "not a loopback address"},
		{"scheme", Options{URL: "https://127.0.0.1:1", Scenario: sc, Requests: 1}, "scheme must be http"},
		{"conns", Options{URL: "http://127.0.0.1:1", Scenario: sc, Requests: 1, Connections: -1}, "connections: must be between"},
		{"rate", Options{URL: "http://127.0.0.1:1", Scenario: sc, Requests: 1, Rate: -5}, "rate: must be"},
		{"scenario", Options{URL: "http://127.0.0.1:1", Requests: 1}, "scenario: not set"},
		{"header", Options{URL: "http://127.0.0.1:1", Scenario: sc, Requests: 1, Headers: []string{"X-Api-Key abc"}}, `headers[0]: want "Name: value"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := NewScenario("nope", FlagKeys{}); err == nil || !strings.Contains(err.Error(), "allowed: bulk, bulk-zipf, fractional") {
		t.Errorf("unknown scenario error %v", err)
	}
}

func TestRemoteAllowedSkipsCheck(t *testing.T) {
	hp, err := checkTarget(context.Background(), "http://192.0.2.1", true, nil)
	if err != nil || hp != "192.0.2.1:80" {
		t.Fatalf("got %q %v", hp, err)
	}
}

func TestReportJSONSchema(t *testing.T) {
	tg, err := StartBare()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	sc, _ := NewScenario("static", FlagKeys{})
	res, err := Run(context.Background(), Options{URL: tg.URL, Label: "bare", Scenario: sc, Connections: 2, Requests: 200})
	if err != nil {
		t.Fatal(err)
	}
	rep := NewReport(time.Now())
	rep.Results = append(rep.Results, res)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	// Decode strictly into a copy of the documented schema: a renamed or
	// added field shows up here and must be reflected in docs/bench.md.
	var got struct {
		Schema    string    `json:"schema"`
		Started   time.Time `json:"started"`
		GoVersion string    `json:"goVersion"`
		OS        string    `json:"os"`
		Arch      string    `json:"arch"`
		CPUs      int       `json:"cpus"`
		Results   []struct {
			Label         string             `json:"label"`
			URL           string             `json:"url"`
			Scenario      string             `json:"scenario"`
			Mode          string             `json:"mode"`
			Connections   int                `json:"connections"`
			Rate          float64            `json:"rate"`
			WarmupSeconds float64            `json:"warmupSeconds"`
			Elapsed       float64            `json:"elapsedSeconds"`
			Requests      int64              `json:"requests"`
			Errors        int64              `json:"errors"`
			ErrorRate     float64            `json:"errorRate"`
			Throughput    float64            `json:"throughput"`
			StatusCodes   map[string]int64   `json:"statusCodes"`
			FirstError    string             `json:"firstError"`
			Latency       map[string]float64 `json:"latencyMicros"`
			Percentiles   []struct {
				Percentile float64 `json:"percentile"`
				Micros     float64 `json:"micros"`
			} `json:"percentiles"`
			Timeline []struct {
				Second     float64 `json:"second"`
				Requests   int64   `json:"requests"`
				Errors     int64   `json:"errors"`
				Throughput float64 `json:"throughput"`
				P50        float64 `json:"p50Micros"`
				P99        float64 `json:"p99Micros"`
			} `json:"timeline"`
		} `json:"results"`
	}
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("report does not match the documented schema: %v", err)
	}
	if got.Schema != SchemaVersion || len(got.Results) != 1 {
		t.Fatalf("schema %q results %d", got.Schema, len(got.Results))
	}
	r0 := got.Results[0]
	if r0.Label != "bare" || r0.Requests != 200 || len(r0.Percentiles) != len(curvePercentiles) {
		t.Errorf("result %+v", r0)
	}
	for _, k := range []string{"min", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"} {
		if _, ok := r0.Latency[k]; !ok {
			t.Errorf("latencyMicros.%s missing", k)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "p99.9") || !strings.Contains(table.String(), "bare") {
		t.Errorf("table:\n%s", table.String())
	}
}
