package experiment_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/telemetry"
)

func take(t *testing.T, r *experiment.Recorder) *experiment.Delta {
	t.Helper()
	raw, err := r.Take()
	if err != nil {
		t.Fatal(err)
	}
	if raw == nil {
		return nil
	}
	var d experiment.Delta
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	return &d
}

// A unit counts once, with its first variant; its events join that variant
// (one conversion per metric, every value summed); events of unknown units
// and of keys no experiment lists are not joined.
func TestRecorderJoinsEventsToFirstExposure(t *testing.T) {
	r := experiment.NewRecorder(2)
	metrics := []string{"purchase", "refund"}
	r.Expose("checkout", metrics, "u1", "on")
	r.Expose("checkout", metrics, "u1", "off") // the flag changed: u1 stays "on"
	r.Expose("checkout", metrics, "u2", "off")
	r.Expose("checkout", metrics, "u3", "off") // over the cap of 2 units
	r.Expose("checkout", metrics, "", "off")   // no targeting key
	for _, tc := range []struct {
		event, unit string
		value       float64
		hasValue    bool
		joined      bool
	}{
		{"purchase", "u1", 10, true, true},
		{"purchase", "u1", 5, true, true},
		{"refund", "u2", 0, false, true},
		{"purchase", "u3", 1, true, false}, // not enrolled
		{"signup", "u1", 1, true, false},   // not a metric
	} {
		if got := r.Track(tc.event, tc.unit, tc.value, tc.hasValue); got != tc.joined {
			t.Errorf("Track(%s, %s) joined=%v, want %v", tc.event, tc.unit, got, tc.joined)
		}
	}
	d := take(t, r)
	if d == nil {
		t.Fatal("no delta")
	}
	on, off := d.Flags["checkout"]["on"], d.Flags["checkout"]["off"]
	if on == nil || off == nil || on.Exposed != 1 || off.Exposed != 1 {
		t.Fatalf("exposures on=%+v off=%+v", on, off)
	}
	if p := on.Metrics["purchase"]; p == nil || p.Converted != 1 || p.Events != 2 || p.Values != 2 || p.Sum != 15 || p.SumSq != 125 {
		t.Fatalf("purchase on: %+v", on.Metrics["purchase"])
	}
	if rf := off.Metrics["refund"]; rf == nil || rf.Converted != 1 || rf.Events != 1 || rf.Values != 0 {
		t.Fatalf("refund off: %+v", off.Metrics["refund"])
	}
	if d.Overflow != 1 || d.NoUnit != 1 {
		t.Fatalf("overflow %d noUnit %d, want 1 and 1", d.Overflow, d.NoUnit)
	}
	// Deltas: nothing new, nothing sent; a second purchase by u1 adds an
	// event but no conversion.
	if d := take(t, r); d != nil {
		t.Fatalf("empty interval produced %+v", d)
	}
	r.Track("purchase", "u1", 1, true)
	d = take(t, r)
	if p := d.Flags["checkout"]["on"].Metrics["purchase"]; p.Converted != 0 || p.Events != 1 || d.Flags["checkout"]["on"].Exposed != 0 {
		t.Fatalf("second interval: %+v", d.Flags["checkout"]["on"])
	}
}

func batch(seq uint64, d experiment.Delta) telemetry.Batch {
	data, _ := json.Marshal(d)
	now := time.Now().UTC()
	return telemetry.Batch{Kind: telemetry.KindExperiments, Env: "dev", Sidecar: "pod-1", Boot: "00112233aabbccdd", Seq: seq, From: now, To: now, Data: data}
}

func delta(variant string, exposed, converted uint64) experiment.Delta {
	return experiment.Delta{Flags: map[string]map[string]*experiment.VariantDelta{"checkout": {
		variant: {Exposed: exposed, Metrics: map[string]*experiment.MetricDelta{"purchase": {Converted: converted, Events: converted}}}}}}
}

func runAggregator(t *testing.T, js jetstream.JetStream, ing *telemetry.Ingest) (*experiment.Aggregator, func()) {
	t.Helper()
	a, err := experiment.OpenAggregator(context.Background(), js, ing, experiment.AggregatorOptions{SaveEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
	}
}

func caughtUp(t *testing.T, a *experiment.Aggregator) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.CaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// Totals add up exactly across a control-plane restart, and a batch resent
// after a lost acknowledgement counts once.
func TestAggregatorSurvivesRestartWithoutDoubleCounting(t *testing.T) {
	s := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, s)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	ing, err := telemetry.OpenIngest(ctx, js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	accept := func(b telemetry.Batch) {
		t.Helper()
		if err := ing.Accept(ctx, b, "http"); err != nil {
			t.Fatal(err)
		}
	}
	a, stop := runAggregator(t, js, ing)
	accept(batch(1, delta("on", 100, 20)))
	accept(batch(2, delta("off", 90, 10)))
	accept(batch(2, delta("off", 90, 10))) // resend
	caughtUp(t, a)
	stop() // saves

	accept(batch(3, delta("on", 5, 1))) // arrives while the control plane is down
	a2, stop2 := runAggregator(t, js, ing)
	defer stop2()
	accept(batch(1, delta("on", 100, 20))) // a very late resend
	accept(batch(4, delta("off", 10, 2)))
	caughtUp(t, a2)
	snap, ok := a2.Get("dev", "checkout")
	if !ok {
		t.Fatal("no aggregates after restart")
	}
	on, off := snap.Totals["on"], snap.Totals["off"]
	if on.Exposed != 105 || on.Metrics["purchase"].Converted != 21 || off.Exposed != 100 || off.Metrics["purchase"].Converted != 12 {
		t.Fatalf("totals on=%+v/%+v off=%+v/%+v, want 105/21 and 100/12", on, on.Metrics["purchase"], off, off.Metrics["purchase"])
	}
	if len(snap.Series) == 0 {
		t.Fatal("no series point")
	}
	if got := a2.Flags("dev"); len(got) != 1 || got[0] != "checkout" {
		t.Fatalf("flags %v", got)
	}
}

func flagDoc(t *testing.T, def string) *config.FlagDoc {
	t.Helper()
	doc, err := config.Parse([]byte(`{"flags":{"checkout":` + def + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	return doc.Flag("checkout")
}

func totals(onUnits, onConv, offUnits, offConv uint64, guard ...uint64) experiment.Snapshot {
	mk := func(units, conv uint64, g uint64) *experiment.VariantDelta {
		v := &experiment.VariantDelta{Exposed: units, Metrics: map[string]*experiment.MetricDelta{"purchase": {Converted: conv, Events: conv}}}
		if len(guard) > 0 {
			v.Metrics["error"] = &experiment.MetricDelta{Converted: g, Events: g}
		}
		return v
	}
	var gOn, gOff uint64
	if len(guard) == 2 {
		gOn, gOff = guard[0], guard[1]
	}
	return experiment.Snapshot{Totals: experiment.Totals{"on": mk(onUnits, onConv, gOn), "off": mk(offUnits, offConv, gOff)}}
}

const expFlag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
	"targeting":{"fractional":[["on",50],["off",50]]},
	"experiment":{"control":"off","metrics":[{"key":"purchase"},{"key":"error","guardrail":true,"better":"lower"}]}}`

func TestReportVerdicts(t *testing.T) {
	f := flagDoc(t, expFlag)
	for _, tc := range []struct {
		name    string
		snap    experiment.Snapshot
		verdict string
		warn    string
	}{
		{"no data", experiment.Snapshot{}, "no exposures yet", "sample too small"},
		{"too early", totals(40, 10, 40, 5), "too early to call", "fewer than 100 units in off (40), on (40)"},
		{"treatment wins", totals(10000, 2200, 10000, 2000), "on is better on purchase (+10.0%", ""},
		{"no difference", totals(10000, 2010, 10000, 2000), "no significant difference from off", ""},
		{"hurts guardrail", totals(10000, 2200, 10000, 2000, 300, 200), "on hurts guardrail error", ""},
		{"sample ratio mismatch", totals(10500, 2200, 9500, 2000), "BROKEN: sample ratio mismatch", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := experiment.Build("dev", "checkout", f, tc.snap)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rep.Verdict, tc.verdict) {
				t.Errorf("verdict %q, want it to contain %q", rep.Verdict, tc.verdict)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(rep.Warnings, "|"), tc.warn) {
				t.Errorf("warnings %q, want %q", rep.Warnings, tc.warn)
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Fatalf("report does not encode: %v", err)
			}
		})
	}
	rep, _ := experiment.Build("dev", "checkout", f, totals(10000, 2200, 10000, 2000))
	on := rep.Metrics[0].Variants[1]
	if on.Variant != "on" || on.VsControl == nil || !on.VsControl.Conversion.Lift.Contains(0.10) || math.Abs(on.Rate.Estimate-0.22) > 1e-12 {
		t.Fatalf("on vs off: %+v", on)
	}
	if rep.SRM.Mismatch || rep.Variants[0].Expected != 0.5 {
		t.Fatalf("srm %+v variants %+v", rep.SRM, rep.Variants)
	}
	if _, err := experiment.Build("dev", "checkout", flagDoc(t, `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`), experiment.Snapshot{}); err == nil {
		t.Fatal("a flag without experiment got a report")
	}
}

func TestExperimentDefinitionErrors(t *testing.T) {
	for _, tc := range []struct{ exp, path, msg string }{
		{`{"metrics":[{"key":"a"}]}`, "flags.checkout.experiment.control", "is required"},
		{`{"control":"maybe","metrics":[{"key":"a"}]}`, "flags.checkout.experiment.control", `"maybe" is not a variant`},
		{`{"control":"off"}`, "flags.checkout.experiment.metrics", "is required"},
		{`{"control":"off","metrics":[{"key":"a b"}]}`, "flags.checkout.experiment.metrics[0].key", "must be 1-128 characters"},
		{`{"control":"off","metrics":[{"key":"a"},{"key":"a"}]}`, "flags.checkout.experiment.metrics[1].key", "listed twice"},
		{`{"control":"off","metrics":[{"key":"a","better":"up"}]}`, "flags.checkout.experiment.metrics[0].better", "not allowed"},
		{`{"control":"off","split":{"on":-1},"metrics":[{"key":"a"}]}`, "flags.checkout.experiment.split.on", "0 or more"},
		{`{"control":"off","split":{"blue":1},"metrics":[{"key":"a"}]}`, "flags.checkout.experiment.split.blue", "not a variant"},
		{`{"control":"off","metrics":[{"key":"a"}],"sample":1}`, "flags.checkout.experiment", "unknown field(s) sample"},
		{`[]`, "flags.checkout.experiment", "must be an object"},
	} {
		_, err := config.Parse([]byte(`{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","experiment":` + tc.exp + `}}}`))
		if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("experiment %s: error %v, want %s: %s", tc.exp, err, tc.path, tc.msg)
		}
	}
}
