package console_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage/delta"
)

// sendBatch posts one telemetry batch as a polling sidecar does (viewer
// token, POST /api/v1/envs/dev/telemetry).
func (s *system) sendBatch(t *testing.T, kind string, seq uint64, payload any) {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	b := telemetry.Batch{Kind: kind, Env: "dev", Sidecar: "pod-1", Boot: "00112233aabbccdd", Seq: seq, From: now.Add(-10 * time.Second), To: now, Data: data}
	s.must(t, s.sidecar, "POST", "/api/v1/envs/dev/telemetry", b, 200)
}

// eventually polls cond until it holds or 15 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s", what)
		}
		<-tick.C
	}
}

// variantDelta is one variant's exposures and its purchases (each worth
// 10) and checkout errors (no value).
func variantDelta(units, purchases, errs uint64) *experiment.VariantDelta {
	return &experiment.VariantDelta{Exposed: units, Metrics: map[string]*experiment.MetricDelta{
		"purchase":       {Converted: purchases, Events: purchases, Values: purchases, Sum: 10 * float64(purchases), SumSq: 100 * float64(purchases)},
		"checkout-error": {Converted: errs, Events: errs},
	}}
}

// pct and ci format as the console does (two decimals, "–" for null).
func pct(x *float64) string {
	if x == nil || math.IsNaN(*x) {
		return "–"
	}
	return fmt.Sprintf("%.2f%%", *x*100)
}

func signedPct(x *float64) string {
	if x == nil {
		return "–"
	}
	return fmt.Sprintf("%+.1f%%", *x*100)
}

type jsonInterval struct{ Estimate, Low, High *float64 }

func ci(iv jsonInterval, f func(*float64) string) string {
	if iv.Estimate == nil {
		return "–"
	}
	return fmt.Sprintf("%s [%s, %s]", f(iv.Estimate), f(iv.Low), f(iv.High))
}

// TestConsoleInsightsInBrowser drives the views over what the sidecars
// report: experiments (verdict, units, per-metric statistics with
// intervals, the rate-over-time picture), flag usage and lifecycle on the
// flags list and the flag page, incidents and recent activity. The data
// comes in as telemetry batches through the API and is aggregated by the
// real experiment, usage and incident aggregators.
func TestConsoleInsightsInBrowser(t *testing.T) {
	bin := browser(t)
	s := start(t)
	exp := func(control string, variants []string, metrics ...map[string]any) map[string]any {
		vs := map[string]any{}
		split := map[string]any{}
		for i, v := range variants {
			vs[v] = i == 0
			split[v] = 50
		}
		return map[string]any{"state": "ENABLED", "variants": vs, "defaultVariant": control, "owner": "growth-team",
			"experiment": map[string]any{"control": control, "split": split, "metrics": metrics}}
	}
	s.must(t, s.admin, "PUT", "/api/v1/envs/dev/flags/checkout-exp", map[string]any{"baseVersion": 0, "reason": "A/B test the new checkout",
		"definition": exp("old", []string{"new", "old"}, map[string]any{"key": "purchase"}, map[string]any{"key": "checkout-error", "guardrail": true, "better": "lower"})}, 201)
	s.must(t, s.admin, "PUT", "/api/v1/envs/dev/flags/signup-exp", map[string]any{"baseVersion": 0, "reason": "A/B test the signup form",
		"definition": exp("a", []string{"b", "a"}, map[string]any{"key": "purchase"})}, 201)

	// What one sidecar saw: checkout-exp at true rates 20 % and 22.5 %;
	// signup-exp with 1,000 units in one arm and 600 in the other of a
	// 50/50 split (a sample ratio mismatch).
	s.sendBatch(t, telemetry.KindExperiments, 1, experiment.Delta{Flags: map[string]map[string]*experiment.VariantDelta{
		"checkout-exp": {"new": variantDelta(3024, 681, 30), "old": variantDelta(2976, 600, 28)},
		"signup-exp":   {"a": variantDelta(1000, 100, 0), "b": variantDelta(600, 60, 0)},
	}})
	s.sendBatch(t, telemetry.KindUsage, 1, delta.Payload{Counts: []delta.Count{
		{Flag: "express-checkout", Variant: "on", Reason: "TARGETING_MATCH", N: 500},
		{Flag: "express-checkout", Variant: "off", Reason: "DEFAULT", N: 20},
	}})
	now := time.Now().UTC()
	ended := now.Add(-110 * time.Minute)
	s.sendBatch(t, telemetry.KindIncidents, 1, incident.Payload{Boot: "00112233aabbccdd", Records: []incident.Record{
		{ID: "pod-1/2", Rev: 1, Kind: "control-plane-unreachable", Status: incident.StatusOpen, Start: now.Add(-10 * time.Minute), Reason: "connection refused",
			Fallbacks: []incident.Fallback{{Name: "last-known-good", Since: now.Add(-10 * time.Minute), Answers: 1234}}, Updated: now},
		{ID: "pod-1/1", Rev: 2, Kind: "nats-disconnected", Status: incident.StatusRecovered, Recovered: true, Start: now.Add(-2 * time.Hour), End: &ended, Updated: ended},
	}})

	var report struct {
		Verdict  string
		Variants []struct{ Units uint64 }
		Metrics  []struct {
			Key      string
			Variants []struct {
				Variant        string
				ConversionRate jsonInterval
				VsControl      *struct{ Conversion struct{ Lift jsonInterval } }
			}
		}
	}
	eventually(t, "the experiment aggregator counts checkout-exp", func() bool {
		out := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/experiments/checkout-exp", nil, 200)
		raw, _ := json.Marshal(out)
		report.Variants = nil
		_ = json.Unmarshal(raw, &report)
		return len(report.Variants) == 2 && report.Variants[0].Units+report.Variants[1].Units == 6000
	})
	eventually(t, "signup-exp counted", func() bool {
		out := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/experiments/signup-exp", nil, 200)
		return strings.HasPrefix(fmt.Sprint(out["verdict"]), "BROKEN")
	})
	eventually(t, "the usage aggregator counts express-checkout", func() bool {
		out := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/usage?flag=express-checkout", nil, 200)
		u, _ := out["usage"].(map[string]any)
		return u != nil && u["last24h"] == float64(520)
	})
	eventually(t, "the ledger keeps both incidents", func() bool {
		out := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/incidents", nil, 200)
		list, _ := out["incidents"].([]any)
		return len(list) == 2
	})
	incidents := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/incidents", nil, 200)["incidents"].([]any)
	openSummary := ""
	for _, i := range incidents {
		if m := i.(map[string]any); m["status"] == "open" {
			openSummary, _, _ = strings.Cut(m["summary"].(string), ": open for") // the rest grows with time
		}
	}
	var wantRate, wantLift string
	for _, m := range report.Metrics {
		for _, v := range m.Variants {
			if m.Key == "purchase" && v.Variant == "new" {
				wantRate, wantLift = ci(v.ConversionRate, pct), ci(v.VsControl.Conversion.Lift, signedPct)
			}
		}
	}
	if wantRate == "" || !strings.HasPrefix(wantRate, "22.52% [") {
		t.Fatalf("report: purchase rate of new %q, verdict %q", wantRate, report.Verdict)
	}

	p := openBrowser(t, bin, s)
	p.signIn(s.sidecar, "dev-sidecar")

	// The list: each experiment with its verdict, the broken one red.
	p.go_("#/envs/dev/experiments")
	p.waitText("#main table", "checkout-exp")
	if got := eval[string](p, `[...document.querySelectorAll("#main tbody tr")].map((r) => r.innerText.replace(/\s+/g, " ").trim()).join("\n")`); !strings.Contains(got, "checkout-exp 6000 new is better on purchase") || !strings.Contains(got, "signup-exp 1600 BROKEN") {
		t.Errorf("experiments list:\n%s", got)
	}
	if n := eval[int](p, `document.querySelectorAll("#main tbody .badge.bad").length`); n != 1 {
		t.Errorf("%d red verdicts in the list, want 1 (signup-exp)", n)
	}
	p.shot("experiments")

	// One experiment: the verdict, the statistics, the picture.
	p.go_("#/envs/dev/experiments/checkout-exp")
	p.waitText("#main .verdict", "new is better on purchase")
	cell := func(metric string, row, col int) string {
		return eval[string](p, fmt.Sprintf(`document.querySelector('[data-metric=%q] tbody').rows[%d].cells[%d].innerText`, metric, row, col))
	}
	for _, tc := range []struct {
		metric   string
		row, col int
		want     string
	}{
		{"purchase", 0, 0, "old"},
		{"purchase", 0, 3, "20.16% [18.76%, 21.64%]"},
		{"purchase", 0, 4, "–"}, // the control has no lift
		{"purchase", 0, 7, "control"},
		{"purchase", 1, 3, wantRate},
		{"purchase", 1, 4, wantLift},
		{"purchase", 1, 6, "10.000 [10.000, 10.000]"},
		{"purchase", 1, 7, "better"},
		{"checkout-error", 1, 6, "–"}, // no event carried a value: the API's null
	} {
		if got := cell(tc.metric, tc.row, tc.col); got != tc.want {
			t.Errorf("%s row %d column %d shows %q, want %q", tc.metric, tc.row, tc.col, got, tc.want)
		}
	}
	if got := eval[string](p, `document.querySelector('[data-metric="checkout-error"] h2').innerText`); !strings.Contains(got, "guardrail") || !strings.Contains(got, "lower is better") {
		t.Errorf("guardrail heading %q", got)
	}
	if got := eval[string](p, `[...document.querySelectorAll("#main table")][0].innerText.replace(/\s+/g, " ")`); !strings.Contains(got, "old (control) 2976 50.00% 49.60%") {
		t.Errorf("units table: %s", got)
	}
	// The picture: an accessible SVG per metric, one point with an error
	// bar per variant and hour, and its data as a table.
	chart := eval[[]string](p, `(() => { const svg = document.querySelector('[data-metric="purchase"] svg[role="img"]');
		if (!svg) return [];
		return [svg.querySelector("title").textContent, svg.querySelector("desc").textContent,
			String(svg.querySelectorAll(".errorbar").length), String(svg.querySelectorAll(".errorbar line").length),
			document.querySelector('[data-metric="purchase"] details tbody').textContent]; })()`)
	if len(chart) != 5 {
		t.Fatalf("no chart for purchase:\n%s", p.text())
	}
	if chart[0] != "purchase: conversion rate per variant over time" || !strings.Contains(chart[1], "new "+wantRate) || chart[2] != "2" || chart[3] != "6" || !strings.Contains(chart[4], wantRate) {
		t.Errorf("chart title %q desc %q, %s error bars of %s lines, data table %q", chart[0], chart[1], chart[2], chart[3], chart[4])
	}
	p.shot("experiment")

	// A sample ratio mismatch is loud.
	p.go_("#/envs/dev/experiments/signup-exp")
	p.waitText("#main .verdict", "BROKEN")
	if got := eval[string](p, `(() => { const v = document.querySelector("#main .verdict"); return v.className + "|" + v.getAttribute("role") + "|" + v.querySelector(".broken").innerText.trim(); })()`); got != "verdict bad|alert|BROKEN — SAMPLE RATIO MISMATCH." {
		t.Errorf("broken verdict shown as %q", got)
	}
	p.shot("experiment-srm")

	// Usage on the flags list and on the flag's page.
	p.go_("#/envs/dev/flags")
	p.waitText("#main table", "express-checkout")
	if got := eval[string](p, `[...document.querySelectorAll("#main tbody tr")].find((r) => r.cells[0].innerText.trim() === "express-checkout").cells[6].innerText`); got != "520" {
		t.Errorf("express-checkout evaluations 24 h on the list: %q, want 520", got)
	}
	p.go_("#/envs/dev/flags/express-checkout")
	p.waitText(`[aria-labelledby="usage-title"]`, "Evaluations, 7 days")
	usageText := eval[string](p, `document.querySelector('[aria-labelledby="usage-title"]').innerText.replace(/\s+/g, " ")`)
	for _, want := range []string{"Evaluations, 24 h 520", "Evaluations, 7 days 520", "on 500 (96.2%), off 20 (3.8%)", "s ago)"} {
		if !strings.Contains(usageText, want) {
			t.Errorf("usage card lacks %q: %s", want, usageText)
		}
	}
	life := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/lifecycle", nil, 200)
	for _, f := range life["flags"].([]any) {
		if f := f.(map[string]any); f["key"] == "express-checkout" {
			want := "No lifecycle findings."
			if fs, _ := f["findings"].([]any); len(fs) > 0 {
				want = fs[0].(map[string]any)["message"].(string)
			}
			if !strings.Contains(usageText, want) {
				t.Errorf("usage card lacks the lifecycle finding %q: %s", want, usageText)
			}
		}
	}
	p.shot("flag-usage")

	// Incidents, newest first, the open one highlighted.
	p.go_("#/envs/dev/incidents")
	p.waitText("#main", "1 open")
	rows := eval[[]string](p, `[...document.querySelectorAll("#main tbody tr")].map((r) => r.className + "|" + r.innerText.replace(/\s+/g, " "))`)
	if len(rows) != 2 || !strings.HasPrefix(rows[0], "lost|open "+openSummary) || !strings.Contains(rows[0], "last-known-good: 1234 answers") || !strings.HasPrefix(rows[1], "|recovered") {
		t.Errorf("incident rows (want the open one first, highlighted, with %q):\n%s", openSummary, strings.Join(rows, "\n"))
	}
	p.shot("incidents")

	// Recent activity: the changes just made, newest first.
	p.go_("#/envs/dev/events")
	p.waitText("#main .events", "signup-exp")
	kinds := eval[[]string](p, `[...document.querySelectorAll("#main .events li")].map((li) => li.dataset.type + "|" + li.innerText.replace(/\s+/g, " "))`)
	changeAt, signupAt := -1, -1
	for i, k := range kinds {
		if strings.HasPrefix(k, "change|") && strings.Contains(k, "signup-exp by root") {
			signupAt = i
		}
		if strings.HasPrefix(k, "change|") && strings.Contains(k, "checkout-exp by root") {
			changeAt = i
		}
	}
	incidentSeen := slices.ContainsFunc(kinds, func(k string) bool {
		return strings.HasPrefix(k, "incident|") && strings.Contains(k, "pod-1: control-plane-unreachable opened")
	})
	if signupAt < 0 || changeAt < 0 || signupAt > changeAt || !incidentSeen {
		t.Errorf("activity (want both changes, signup-exp the newer, and the incident that opened):\n%s", strings.Join(kinds, "\n"))
	}
	p.shot("events")
}
